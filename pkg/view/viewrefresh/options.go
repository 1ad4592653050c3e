package viewrefresh

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// Policy chooses among the members a connection may go to.
type Policy int

const (
	// Primary chooses the member of lowest rank, the oldest: every
	// connection goes to one member, which gives passive replication.
	Primary Policy = iota
	// Rendezvous chooses by rendezvous (highest random weight) hashing of
	// the connection ID and the member ID: connections spread over the
	// members, the same on every forwarder, and when a member leaves only its
	// connections move.
	Rendezvous
	// LeastConnections chooses the member this element routes the fewest
	// connections to, the lower rank on a tie.
	LeastConnections
)

// String returns the policy's name.
func (p Policy) String() string {
	switch p {
	case Primary:
		return "primary"
	case Rendezvous:
		return "rendezvous"
	case LeastConnections:
		return "least-connections"
	default:
		return fmt.Sprintf("Policy(%d)", int(p))
	}
}

type options struct {
	policy          Policy
	log             *logrus.Entry
	reselectTimeout time.Duration
	reselectWorkers int
	retryMin        time.Duration
	retryMax        time.Duration
	warmup          time.Duration
}

// Option configures NewServer.
type Option func(*options)

// WithPolicy sets the selection policy; the default is Primary.
func WithPolicy(p Policy) Option {
	return func(o *options) { o.policy = p }
}

// WithLogger sets the logger; the default is logrus's standard logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}

// WithReselect bounds the re-entries that move the connections of a
// departed member: each takes at most timeout, and at most workers run at
// once (defaults: 30 s, 16).
func WithReselect(timeout time.Duration, workers int) Option {
	return func(o *options) {
		if timeout > 0 {
			o.reselectTimeout = timeout
		}
		if workers > 0 {
			o.reselectWorkers = workers
		}
	}
}

// WithWatchRetry sets how long the element waits before it watches a group
// again after its watch broke: from min, doubling up to max (defaults: 50 ms,
// 2 s). Meanwhile connections are routed by the last view received.
func WithWatchRetry(minDelay, maxDelay time.Duration) Option {
	return func(o *options) {
		if minDelay > 0 {
			o.retryMin = minDelay
		}
		if maxDelay >= o.retryMin {
			o.retryMax = maxDelay
		}
	}
}

// DefaultWarmup is how long after it starts the element waits for the
// members that connections it does not know yet name (see WithWarmup).
const DefaultWarmup = 3 * time.Second

// WithWarmup sets how long after the element starts it refuses, with
// codes.Unavailable, to move a connection it does not know yet (a refresh
// reaching a forwarder that restarted) whose member is not in the view:
// that member is probably still joining the restarted forwarder, and the
// connection's channel to it still works. After the warm-up such a
// connection is routed anew as usual; a request with no member (a heal's
// reselect) never waits. Zero turns the warm-up off. Default DefaultWarmup.
func WithWarmup(d time.Duration) Option {
	return func(o *options) { o.warmup = d }
}
