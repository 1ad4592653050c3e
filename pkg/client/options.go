package client

import (
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/heal"
	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/rdma"
)

type options struct {
	metrics     *metrics.Channels
	observer    func(heal.Report)
	backoff     heal.Backoff
	name        string
	providers   []rdma.Provider
	dialOptions []grpc.DialOption
	lifetime    time.Duration
	log         *logrus.Entry
}

// Option configures Dial.
type Option func(*options)

// WithName sets the client's path segment name (default: "client-" and a
// random suffix). It must be unique among the clients of a forwarder.
func WithName(name string) Option {
	return func(o *options) { o.name = name }
}

// WithProviders sets the channel providers the client can use, in its order
// of preference (default: shm, then tcp).
func WithProviders(providers ...rdma.Provider) Option {
	return func(o *options) { o.providers = providers }
}

// WithDialOptions adds options to the gRPC connection to the forwarder
// (credentials for mTLS).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithLifetime sets how long a connection lives at the forwarder without a
// refresh; the client refreshes it at a third of that (default
// updatepath.DefaultLifetime, a minute).
func WithLifetime(d time.Duration) Option {
	return func(o *options) { o.lifetime = d }
}

// WithHealObserver sets a function told of every heal of every connection
// (started, failed attempt, succeeded with its duration). It must not block.
func WithHealObserver(f func(heal.Report)) Option {
	return func(o *options) { o.observer = f }
}

// WithHealBackoff sets the retry policy of heals (default
// heal.DefaultBackoff).
func WithHealBackoff(b heal.Backoff) Option {
	return func(o *options) { o.backoff = b }
}

// WithChannelMetrics counts the messages and bytes of every channel in m.
func WithChannelMetrics(m *metrics.Channels) Option {
	return func(o *options) { o.metrics = m }
}

// WithLogger sets the logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}

// ConnectOption configures one connection.
type ConnectOption func(*connectOptions)

type connectOptions struct {
	labels   map[string]string
	selector map[string]string
}

// WithLabels sets the connection's labels.
func WithLabels(labels map[string]string) ConnectOption {
	return func(o *connectOptions) { o.labels = labels }
}

// WithSelector asks for a member whose labels include all of these.
func WithSelector(selector map[string]string) ConnectOption {
	return func(o *connectOptions) { o.selector = selector }
}
