package call

// Idle reports whether c is ready to run its next call alone: no call
// pending, a channel, not closed, nobody reading.
func Idle(c *Caller) bool { return c.state.Load() == 0 }
