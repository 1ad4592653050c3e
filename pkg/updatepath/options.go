package updatepath

import "time"

type options struct {
	lifetime time.Duration
	now      func() time.Time
}

// Option configures NewServer and NewClient.
type Option func(*options)

// WithLifetime sets how long after each Request the hop's segment expires
// (default DefaultLifetime). The hop promises to refresh before then; the
// next hop closes the connection when it does not.
func WithLifetime(d time.Duration) Option {
	return func(o *options) { o.lifetime = d }
}

// WithClock sets the clock the expiry is computed with (for tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

func newOptions(opts []Option) options {
	o := options{lifetime: DefaultLifetime, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
