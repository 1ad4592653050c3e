package inproc

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Option configures the provider.
type Option func(*options)

type options struct {
	window           int
	handshakeTimeout time.Duration
	log              logrus.FieldLogger
}

func newOptions(opts []Option) options {
	o := options{window: 256, handshakeTimeout: 10 * time.Second, log: logrus.StandardLogger()}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithWindow sets how many messages a receiver accepts unacknowledged (256
// by default); a sender blocks beyond it.
func WithWindow(messages int) Option {
	return func(o *options) {
		if messages > 0 {
			o.window = messages
		}
	}
}

// WithHandshakeTimeout bounds the listener's side of a handshake (10 s by default).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.handshakeTimeout = d
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
