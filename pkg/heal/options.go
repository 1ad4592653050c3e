package heal

import (
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
)

// DefaultAttemptTimeout bounds one re-request.
const DefaultAttemptTimeout = 5 * time.Second

// Kind is what a Report says.
type Kind int

// The kinds of report.
const (
	// Started: a failure was seen and a heal began.
	Started Kind = iota + 1
	// Failed: one attempt failed; another follows after a back-off.
	Failed
	// Succeeded: the connection works again; Took is how long it was down.
	Succeeded
)

func (k Kind) String() string {
	switch k {
	case Started:
		return "started"
	case Failed:
		return "failed"
	case Succeeded:
		return "succeeded"
	}
	return "unknown"
}

// Report tells the application about a heal.
type Report struct {
	ConnID string
	Kind   Kind
	// Cause is the failure that started the heal (Started) or that the
	// failed attempt answered.
	Cause Event
	// Took is the time from the failure to the working connection
	// (Succeeded).
	Took time.Duration
	// Err is the attempt's error (Failed).
	Err error
}

type options struct {
	monitor        networkservice.MonitorConnectionClient
	backoff        Backoff
	attemptTimeout time.Duration
	observer       func(Report)
	log            *logrus.Entry
}

// Option configures NewClient.
type Option func(*options)

// WithMonitor sets the monitor client of the server the chain requests
// connections from (without it, heal watches channels only).
func WithMonitor(mc networkservice.MonitorConnectionClient) Option {
	return func(o *options) { o.monitor = mc }
}

// WithBackoff sets the retry policy (default DefaultBackoff).
func WithBackoff(b Backoff) Option {
	return func(o *options) { o.backoff = b }
}

// WithAttemptTimeout bounds one re-request (default DefaultAttemptTimeout).
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) { o.attemptTimeout = d }
}

// WithObserver sets a function told of every heal. It must not block.
func WithObserver(f func(Report)) Option {
	return func(o *options) { o.observer = f }
}

// WithLogger sets the logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}
