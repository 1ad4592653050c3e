package core

import (
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Acceptor runs a listener's accept loop: it hands each new connection to
// serve in a goroutine of its own, at most max at a time (connections
// beyond are closed at once and counted as handshake failures), and backs
// off while accepting fails (out of descriptors, for instance). Close stops
// it, closes the connections still in their handshake and waits for every
// serve to return.
type Acceptor[C interface {
	comparable
	io.Closer
}] struct {
	accept  func() (C, error)
	serve   func(C)
	table   *Table
	log     logrus.FieldLogger
	mu      sync.Mutex
	pending map[C]struct{} // in their handshake
	closed  bool
	slots   chan struct{}
	closing chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

// NewAcceptor returns an acceptor that accepts with accept and serves with
// serve, once started.
func NewAcceptor[C interface {
	comparable
	io.Closer
}](accept func() (C, error), serve func(C), maxHandshakes int, table *Table, log logrus.FieldLogger) *Acceptor[C] {
	a := &Acceptor[C]{
		accept:  accept,
		serve:   serve,
		table:   table,
		log:     log,
		pending: make(map[C]struct{}),
		slots:   make(chan struct{}, maxHandshakes),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	return a
}

// Start starts accepting.
func (a *Acceptor[C]) Start() { go a.loop() }

func (a *Acceptor[C]) loop() {
	defer close(a.done)
	backoff := time.Duration(0)
	for {
		c, err := a.accept()
		if err != nil {
			select {
			case <-a.closing:
				return
			default:
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			a.log.WithError(err).Warn("rdma accept failed")
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-a.closing:
				timer.Stop()
				return
			}
			continue
		}
		backoff = 0
		select {
		case a.slots <- struct{}{}:
		default:
			a.table.CountHandshakeFailure()
			a.log.Warn("rdma handshake refused: too many handshakes at once")
			_ = c.Close()
			continue
		}
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			_ = c.Close()
			<-a.slots
			return
		}
		a.pending[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			defer func() { <-a.slots }()
			a.serve(c)
		}()
	}
}

// Handshaken tells the acceptor that c's handshake ended: Close no longer
// closes it. It reports whether the acceptor is closing, in which case the
// caller must not hand c out.
func (a *Acceptor[C]) Handshaken(c C) (closing bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pending, c)
	return a.closed
}

// Fail ends c, whose handshake or setup failed with err: it counts and logs
// err (see Table.HandshakeFailed) and closes c. Before, if c is still in its
// handshake, it lets the peer read our refusal: it stops writing and reads
// what the peer sent until the peer closes, the handshake's deadline or the
// acceptor's Close, because a dialer's setup goes out before our verdict and
// a socket closed with unread data resets the connection, which could
// overtake the refusal.
func (a *Acceptor[C]) Fail(c C, log logrus.FieldLogger, err error) {
	a.table.HandshakeFailed(log, err)
	a.mu.Lock()
	_, pending := a.pending[c]
	a.mu.Unlock()
	if pending {
		if hc, ok := any(c).(interface {
			io.Reader
			CloseWrite() error
		}); ok && hc.CloseWrite() == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(hc, maxDrain))
		}
		a.Handshaken(c)
	}
	_ = c.Close()
}

// maxDrain bounds what Fail reads from a failed peer.
const maxDrain = 64 << 10

// Close stops accepting: it closes the connections in their handshake,
// calls closeListener (which makes accept fail), and waits for the loop and
// every serve to return. It returns closeListener's error.
func (a *Acceptor[C]) Close(closeListener func() error) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	close(a.closing)
	for c := range a.pending {
		_ = c.Close()
	}
	a.mu.Unlock()
	err := closeListener()
	<-a.done
	a.wg.Wait()
	return err
}
