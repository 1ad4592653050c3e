package connect

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// ClientFactory makes the client sub-chain for one URL. ctx lives as long as
// the shared connection to the URL; cc is that connection.
type ClientFactory func(ctx context.Context, cc grpc.ClientConnInterface) networkservice.NetworkServiceClient

// DefaultDialTimeout bounds how long a Request waits for the next hop to be
// reachable.
const DefaultDialTimeout = time.Second

type options struct {
	factory     ClientFactory
	dialTimeout time.Duration
	dialOptions []grpc.DialOption
	callOptions []grpc.CallOption
	log         *logrus.Entry
}

// Option configures NewServer.
type Option func(*options)

// WithClientFactory sets the maker of client sub-chains. The default is the
// plain gRPC stub, networkservice.NewNetworkServiceClient.
func WithClientFactory(f ClientFactory) Option {
	return func(o *options) { o.factory = f }
}

// WithDialTimeout sets how long a Request waits for its URL to be reachable
// before it fails with codes.Unavailable (default DefaultDialTimeout).
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) { o.dialTimeout = d }
}

// WithDialOptions adds options to every grpc.NewClient; the default
// transport credentials are insecure (local sockets), replace them for mTLS.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithCallOptions adds options to every call the client sub-chain makes.
func WithCallOptions(opts ...grpc.CallOption) Option {
	return func(o *options) { o.callOptions = append(o.callOptions, opts...) }
}

// WithLogger sets the logger (default: logrus's standard logger).
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}
