package embedded

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/view"
)

// Defaults suited to one machine: a member heartbeats every 100 ms and is
// removed when none came for 500 ms (and at once when its stream breaks).
const (
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultLeaseTime         = 500 * time.Millisecond
)

// Clock is where the provider reads time and sets the timer that expires
// leases. The default is the system clock.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f once d has passed, in a goroutine of its own or in
	// the goroutine that advances the clock, never inside AfterFunc. stop
	// cancels it and reports whether f was still pending.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

type options struct {
	clock     Clock
	heartbeat time.Duration
	lease     time.Duration
	limits    view.Limits
	log       *logrus.Entry
}

// Option configures New.
type Option func(*options)

// WithClock sets the clock.
func WithClock(c Clock) Option {
	return func(o *options) { o.clock = c }
}

// WithLease sets the heartbeat interval leased members are told to keep and
// the lease time after which a member that sent no heartbeat is removed. A
// lease shorter than two heartbeat intervals is raised to two intervals.
func WithLease(heartbeat, lease time.Duration) Option {
	return func(o *options) {
		if heartbeat > 0 {
			o.heartbeat = heartbeat
		}
		if lease > 0 {
			o.lease = lease
		}
	}
}

// WithLimits sets the limits members are checked against.
func WithLimits(l view.Limits) Option {
	return func(o *options) { o.limits = l }
}

// WithLogger sets the logger; the default is logrus's standard logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}
