package verbs

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Option configures the provider.
type Option func(*options)

type options struct {
	slots            int
	slotSize         int
	windowMessages   int
	windowBytes      int
	handshakeTimeout time.Duration
	closeTimeout     time.Duration
	ackDelay         time.Duration
	maxHandshakes    int
	log              logrus.FieldLogger
}

func newOptions(opts []Option) options {
	o := options{
		slots:            64,
		slotSize:         64 << 10,
		windowMessages:   256,
		windowBytes:      16 << 20,
		handshakeTimeout: 10 * time.Second,
		closeTimeout:     time.Second,
		ackDelay:         2 * time.Millisecond,
		maxHandshakes:    128,
		log:              logrus.StandardLogger(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithSlots sets how many send and receive slots a channel registers, and
// their size (64 slots of 64 KiB by default): the memory a channel pins is
// twice their product.
func WithSlots(slots, size int) Option {
	return func(o *options) {
		o.slots = min(max(slots, 4), 4096)
		o.slotSize = min(max(size, minSlotSize), maxSlotSize)
	}
}

// WithWindow sets the receive window (256 messages, 16 MiB by default).
func WithWindow(messages, bytes int) Option {
	return func(o *options) {
		o.windowMessages = min(max(messages, 1), maxWindowMsgs)
		o.windowBytes = min(max(bytes, minWindowBytes), maxWindowBytes) &^ 4095
	}
}

// WithHandshakeTimeout bounds the connection, handshake and setup (10 s by default).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.handshakeTimeout = d
		}
	}
}

// WithMaxHandshakes bounds the connections a listener sets up at once (128
// by default); requests beyond it are rejected.
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
