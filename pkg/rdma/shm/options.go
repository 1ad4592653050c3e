package shm

import (
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Option configures the provider.
type Option func(*options)

type options struct {
	slots            int
	dataSize         int
	spin             time.Duration
	handshakeTimeout time.Duration
	closeTimeout     time.Duration
	maxHandshakes    int
	peerCheck        func(unix.Ucred) error
	log              logrus.FieldLogger
}

func newOptions(opts []Option) options {
	o := options{
		slots:            512,
		dataSize:         2 << 20,
		spin:             50 * time.Microsecond,
		handshakeTimeout: 10 * time.Second,
		closeTimeout:     time.Second,
		maxHandshakes:    128,
		peerCheck:        sameUser,
		log:              logrus.StandardLogger(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// sameUser accepts a peer running as the same user as this process.
func sameUser(peer unix.Ucred) error {
	if int(peer.Uid) != os.Getuid() {
		return fmt.Errorf("peer process %d runs as user %d, not %d", peer.Pid, peer.Uid, os.Getuid())
	}
	return nil
}

// WithRing sets the geometry of the rings a dialer proposes: slots
// descriptors (a power of two, 512 by default) and a data area of dataSize
// bytes (a multiple of 4096, 2 MiB by default) per direction. The slots
// also bound how many messages a sender has unacknowledged.
func WithRing(slots, dataSize int) Option {
	return func(o *options) {
		o.slots, o.dataSize = slots, dataSize
	}
}

// WithSpin sets how long a waiting side polls the ring before it sleeps on
// its eventfd (50 µs by default; 0 sleeps at once). Sleeping and being
// woken costs microseconds, polling a fraction of one: a poll long enough
// to cover the peer's usual answer keeps round trips near the hardware's
// floor, and the bound keeps an idle channel from burning a core.
func WithSpin(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.spin = d
		}
	}
}

// WithHandshakeTimeout bounds the handshake and setup (10 s by default).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.handshakeTimeout = d
		}
	}
}

// WithPeerCheck replaces the check of the other process's credentials
// (SO_PEERCRED), done by both the listener and the dialer. By default the
// peer must run as the same user.
func WithPeerCheck(check func(unix.Ucred) error) Option {
	return func(o *options) {
		if check != nil {
			o.peerCheck = check
		}
	}
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
