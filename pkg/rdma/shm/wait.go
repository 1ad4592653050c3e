package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
)

// waiter sleeps on an eventfd of ours through Go's poller. The end of a
// sleeper's context kicks the eventfd (watch, kept across sleeps with the
// same context so that a sleep allocates nothing); a kick that comes when
// nobody sleeps wakes the next sleep early, which looks again.
//
// The eventfd joins the poller at the first sleep: that costs a system call
// when it joins and one when it is closed, which a waiter that never sleeps
// (the producer's, unless its ring fills; the consumer's of a side that
// only receives answers within the spin) does not pay. Until then a kick
// of our own is a flag that the first sleep finds, not a write (the peer,
// which has the descriptor, writes to it).
type waiter struct {
	fd     int
	buf    [8]byte
	kickFn func()

	mu     sync.Mutex // guards the fields below, used by the sleeper, kick and close
	f      *os.File   // the eventfd in the poller, from the first sleep on
	kicked bool       // kick ran before the first sleep
	closed bool
	watch  core.Watch
}

func newWaiter() (*waiter, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &waiter{fd: fd}
	w.kickFn = w.kick
	return w, nil
}

// sleep blocks until the eventfd is kicked or ctx ends.
func (w *waiter) sleep(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return os.ErrClosed
	}
	if w.f == nil {
		w.f = os.NewFile(uintptr(w.fd), "eventfd")
		if w.kicked {
			w.mu.Unlock()
			return ctx.Err()
		}
	}
	f := w.f
	if w.watch.Arm(ctx, w.kickFn) {
		w.mu.Unlock()
		return ctx.Err()
	}
	w.mu.Unlock()
	if _, err := f.Read(w.buf[:]); err != nil {
		return err
	}
	return ctx.Err()
}

// kick wakes the sleeper (or the next one). It holds mu, so that a kick
// racing with close cannot hit a reused descriptor number.
func (w *waiter) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
	case w.f == nil:
		w.kicked = true
	default:
		kick(w.fd)
	}
}

func (w *waiter) close() {
	w.mu.Lock()
	w.closed = true
	w.watch.Stop()
	f := w.f
	w.mu.Unlock()
	if f != nil {
		_ = f.Close() // wakes a sleeper
	} else {
		_ = unix.Close(w.fd)
	}
}

var one = binary.NativeEndian.AppendUint64(nil, 1)

// spin polls ready for up to d (checking the clock every 64 polls) and
// reports whether it became true. Polling is what makes a round trip take
// a fraction of a microsecond; the bound keeps a waiter from burning a core
// that the other side (or another process) needs.
func spin(d time.Duration, ready func() bool) bool {
	if d <= 0 {
		return ready()
	}
	var start time.Time
	for i := 1; ; i++ {
		if ready() {
			return true
		}
		if i&63 == 0 {
			if start.IsZero() {
				start = time.Now()
			} else if time.Since(start) >= d {
				return false
			}
		}
	}
}

// minSpin is the shortest poll an adaptive spinner shrinks to: long enough
// to catch an answer on an idle machine, and so to grow back.
const minSpin = 2 * time.Microsecond

// spinner adapts the poll to what waiting costs: when polling fails (the
// caller then sleeps) it halves its poll, when it succeeds it doubles it,
// up to the configured bound. When the two sides share one core (other
// processes take the rest), a long poll only delays the side that would
// answer; a short one hands the core over sooner.
type spinner struct {
	limit time.Duration
}

// wait polls ready for the current limit, at most bound, and adapts.
func (s *spinner) wait(bound time.Duration, ready func() bool) bool {
	if bound <= 0 {
		return ready()
	}
	if s.limit <= 0 {
		// A new channel starts with the shortest poll: until its peer
		// shows that it answers fast, polling takes a core from the
		// processes setting the connection up.
		s.limit = minSpin
	}
	s.limit = min(s.limit, bound)
	if spin(s.limit, ready) {
		s.limit = min(bound, 2*s.limit)
		return true
	}
	s.limit = max(min(minSpin, bound), s.limit/2)
	return false
}

// kick adds one to an eventfd; a full counter means a wake-up is pending
// anyway.
func kick(fd int) {
	for {
		_, err := unix.Write(fd, one)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// anonInode is the device and inode every eventfd shares: the kernel's
// anonymous inode, found with an eventfd of our own.
var anonInode = sync.OnceValues(func() (unix.Stat_t, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(fd) //nolint:errcheck // nothing to tell
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	return st, err
})

// isEventfd reports whether fd, a peer's descriptor we kick, is an eventfd
// or another file on the kernel's anonymous inode (epoll, timerfd, ...),
// whose write fails at once: not a pipe, socket or regular file, where a
// kick would write data or block. It must be in non-blocking mode (ours
// are), or a peer that filled its counter would hold a kick, and the
// Send or Close behind it, forever. (The peer shares the file's mode and
// could change it later; peers are checked with SO_PEERCRED, by default
// for our own user.) One fstat and one fcntl; reading the /proc link that
// names the kind cost ten times as much in a connection's setup.
func isEventfd(fd int) bool {
	ref, err := anonInode()
	if err != nil {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return false
	}
	if st.Dev != ref.Dev || st.Ino != ref.Ino || st.Mode&unix.S_IFMT != ref.Mode&unix.S_IFMT {
		return false
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_NONBLOCK != 0
}
