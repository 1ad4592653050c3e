package etcd

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/view"
)

// Defaults: a member whose process died is removed one lease TTL after its
// last keep-alive, plus the time etcd takes to notice (up to half a second).
const (
	DefaultPrefix = "/tether/view/"
	DefaultTTL    = 2 * time.Second
)

type options struct {
	prefix    string
	ttl       time.Duration
	heartbeat time.Duration
	limits    view.Limits
	log       *logrus.Entry
	// progress is how often a reader asks etcd for a progress notification
	// until its replay has reached the revision it read at.
	progress time.Duration
	// timeout bounds each etcd call a membership makes on its own.
	timeout time.Duration
}

// Option configures New.
type Option func(*options)

// WithPrefix sets the prefix of every key the provider uses.
func WithPrefix(prefix string) Option {
	return func(o *options) { o.prefix = prefix }
}

// WithTTL sets the lease TTL of members that join through the provider;
// etcd counts it in whole seconds, so it is rounded up to one.
func WithTTL(ttl time.Duration) Option {
	return func(o *options) { o.ttl = ttl }
}

// WithHeartbeatInterval sets how often a member renews its lease; the
// default is a third of the TTL. An interval longer than the TTL makes
// members expire: tests use it for a member that hangs.
func WithHeartbeatInterval(d time.Duration) Option {
	return func(o *options) { o.heartbeat = d }
}

// WithLimits sets the limits members are checked against, when they join
// and when they are read from etcd.
func WithLimits(l view.Limits) Option {
	return func(o *options) { o.limits = l }
}

// WithLogger sets the logger; the default is logrus's standard logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}
