package heal

import (
	"math/rand/v2"
	"time"
)

// The decisions of heal are kept apart from its I/O: a connection's healer
// is a state machine that takes events and returns actions, so that the hard
// cases (a failure during a heal, a Close during a retry, two failures at
// once) are table tests rather than races.

// Event is something a connection's healer learns.
type Event int

// The events a healer reacts to.
const (
	// ChannelDown: the data channel to the member ended with a failure.
	ChannelDown Event = iota + 1
	// ControlDown: the monitor stream of the server the connection was
	// requested from broke, while the channel still works.
	ControlDown
	// MemberGone: the server said the connection's member left (the
	// connection was deleted there).
	MemberGone
	// Moved: the server moved the connection to another member (an update
	// with other channel parameters): a refresh picks up the new binding.
	Moved
	// HealSucceeded and HealFailed end the re-request the healer started.
	HealSucceeded
	HealFailed
	// RetryDue: the back-off timer the healer asked for fired.
	RetryDue
	// Closed: the connection was closed or its context ended.
	Closed
)

func (e Event) String() string {
	switch e {
	case ChannelDown:
		return "channel down"
	case ControlDown:
		return "control stream down"
	case MemberGone:
		return "member gone"
	case Moved:
		return "moved"
	case HealSucceeded:
		return "heal succeeded"
	case HealFailed:
		return "heal failed"
	case RetryDue:
		return "retry due"
	case Closed:
		return "closed"
	}
	return "unknown"
}

// Action is what the healer asks its I/O side to do.
type Action struct {
	// Request re-requests the connection from the start of the chain.
	// Reselect clears its member and mechanism first, so that the server
	// chooses anew.
	Request  bool
	Reselect bool
	// RetryAfter > 0 arms the back-off timer (RetryDue when it fires).
	RetryAfter time.Duration
	// Started, Succeeded and Failed report a heal to the application;
	// Took is the time from the first failure to the success.
	Started, Succeeded, Failed bool
	Took                       time.Duration
}

// Backoff is the retry policy: the first retry waits about First, each
// next one twice as long, up to Max; each wait is drawn at random between
// half and all of it (jitter), so that many clients healing at once spread.
type Backoff struct {
	First, Max time.Duration
}

// DefaultBackoff retries quickly at first and settles at one attempt a
// second.
var DefaultBackoff = Backoff{First: 5 * time.Millisecond, Max: time.Second}

func (b Backoff) delay(attempt int, rng *rand.Rand) time.Duration {
	d := b.First
	for range attempt - 1 {
		d *= 2
		if d >= b.Max {
			d = b.Max
			break
		}
	}
	d = min(d, b.Max)
	if d <= 1 {
		return max(d, 1)
	}
	return d/2 + time.Duration(rng.Int64N(int64(d/2)+1))
}

// healer is the state of one connection's heal.
type healer struct {
	backoff Backoff
	rng     *rand.Rand

	closed   bool
	inFlight bool      // a re-request is running
	current  bool      // ... and it reselects
	waiting  bool      // the back-off timer is armed
	pending  bool      // a failure needs a heal
	reselect bool      // ... one that chooses a new member
	attempt  int       // failed attempts since the failure
	since    time.Time // first failure of the current heal
}

func newHealer(b Backoff, rng *rand.Rand) *healer {
	return &healer{backoff: b, rng: rng}
}

// step takes one event at time now and returns what to do.
func (h *healer) step(ev Event, now time.Time) Action {
	if h.closed {
		return Action{}
	}
	switch ev {
	case Closed:
		h.closed = true
		return Action{}
	case ChannelDown, MemberGone:
		return h.fail(true, now)
	case ControlDown, Moved:
		return h.fail(false, now)
	case HealSucceeded:
		h.inFlight = false
		if h.pending { // something failed again while the heal ran
			return h.start()
		}
		took := now.Sub(h.since)
		h.attempt = 0
		return Action{Succeeded: true, Took: took}
	case HealFailed:
		h.inFlight = false
		h.pending = true
		h.reselect = h.reselect || h.current
		h.attempt++
		h.waiting = true
		return Action{RetryAfter: h.backoff.delay(h.attempt, h.rng), Failed: true}
	case RetryDue:
		h.waiting = false
		if !h.pending || h.inFlight {
			return Action{}
		}
		return h.start()
	}
	return Action{}
}

// fail records a failure; a heal starts now unless one runs or waits.
func (h *healer) fail(reselect bool, now time.Time) Action {
	first := !h.pending && !h.inFlight && !h.waiting
	if first {
		h.since = now
	}
	h.pending = true
	h.reselect = h.reselect || reselect
	if h.inFlight || h.waiting {
		return Action{}
	}
	a := h.start()
	a.Started = first
	return a
}

func (h *healer) start() Action {
	a := Action{Request: true, Reselect: h.reselect}
	h.current = h.reselect
	h.pending, h.reselect, h.inFlight = false, false, true
	return a
}
