package tcp

import (
	"context"
	"net"
	"time"

	"github.com/sirupsen/logrus"
)

// Option configures the provider.
type Option func(*options)

type options struct {
	windowMessages   int
	windowBytes      int
	handshakeTimeout time.Duration
	idle             time.Duration
	closeTimeout     time.Duration
	maxHandshakes    int
	keepAlive        net.KeepAliveConfig
	userTimeout      time.Duration
	dial             func(ctx context.Context, addr string) (net.Conn, error)
	log              logrus.FieldLogger
}

func newOptions(opts []Option) options {
	o := options{
		windowMessages:   256,
		windowBytes:      16 << 20,
		handshakeTimeout: 10 * time.Second,
		idle:             2 * time.Millisecond,
		closeTimeout:     time.Second,
		maxHandshakes:    128,
		keepAlive:        net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
		userTimeout:      30 * time.Second,
		log:              logrus.StandardLogger(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.dial == nil {
		d := &net.Dialer{KeepAliveConfig: o.keepAlive}
		o.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return o
}

// WithWindow sets the receive window: how many messages and payload bytes
// the peer may have unacknowledged at once (256 and 16 MiB by default). A
// receiver never buffers more, except one message larger than the byte
// window, which a sender only sends when nothing else is in flight.
func WithWindow(messages, bytes int) Option {
	return func(o *options) {
		o.windowMessages = min(max(messages, minWindowMessages), maxWindowMessages)
		o.windowBytes = min(max(bytes, minWindowBytes), maxWindowBytes)
	}
}

// WithHandshakeTimeout bounds the handshake and setup of a channel (10 s by
// default).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.handshakeTimeout = d
		}
	}
}

// WithIdle sets how long a channel may sit without a caller reading it
// before its background goroutine reads in its place (2 ms by default). It
// bounds how late a channel that nobody reads notices the peer's close,
// places one-sided writes and sends delayed acknowledgements.
func WithIdle(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.idle = d
		}
	}
}

// WithKeepAlive sets the TCP keep-alive probes that detect a peer host that
// vanished without closing (15 s idle, 5 s interval, 3 probes by default).
func WithKeepAlive(cfg net.KeepAliveConfig) Option {
	return func(o *options) { o.keepAlive = cfg }
}

// WithUserTimeout sets how long sent data may stay unacknowledged by the
// peer's host before the connection is dropped (TCP_USER_TIMEOUT, 30 s by
// default): it ends a channel whose peer host vanished while data was in
// flight, and unblocks a Send writing to it. Zero leaves the system default.
func WithUserTimeout(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.userTimeout = d
		}
	}
}

// WithDialer replaces the function that opens connections (for example to
// dial from another network namespace or through a proxy).
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dial = dial }
}

// WithMaxHandshakes bounds the handshakes a listener runs at once (128 by
// default); connections beyond it are closed at once.
func WithMaxHandshakes(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxHandshakes = n
		}
	}
}

// WithLogger sets the logger (logrus' standard logger by default).
func WithLogger(log logrus.FieldLogger) Option {
	return func(o *options) {
		if log != nil {
			o.log = log
		}
	}
}
