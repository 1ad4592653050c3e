package core

import (
	"context"
	"sync"
	"sync/atomic"
)

// Sem is a mutex that a waiter can give up on when its context ends. An
// uncontended Acquire and Release are two atomic operations; waiters park on
// a channel.
type Sem struct {
	state   atomic.Int32 // 1 while held
	waiters atomic.Int32
	wake    chan struct{}
}

// NewSem returns an unlocked Sem.
func NewSem() *Sem { return &Sem{wake: make(chan struct{}, 1)} }

// Acquire locks s, or returns ctx's error, or errDone() when done is closed
// first. done may be nil.
func (s *Sem) Acquire(ctx context.Context, done <-chan struct{}, errDone func() error) error {
	if s.state.CompareAndSwap(0, 1) {
		return nil
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	for {
		if s.state.CompareAndSwap(0, 1) {
			return nil
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return errDone()
		}
	}
}

// TryAcquire locks s if it is free and reports whether it did.
func (s *Sem) TryAcquire() bool { return s.state.CompareAndSwap(0, 1) }

// Release unlocks s and wakes a waiter, if any.
func (s *Sem) Release() {
	s.state.Store(0)
	if s.waiters.Load() > 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Notifier wakes every goroutine waiting for a change of some state guarded
// by the caller's mutex. Use it with that mutex held: take Wait's channel,
// unlock, and block on it; whoever changes the state calls Broadcast. It only
// allocates when somebody waits.
type Notifier struct {
	ch chan struct{}
}

// Wait returns a channel closed by the next Broadcast.
func (n *Notifier) Wait() <-chan struct{} {
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// Broadcast wakes every goroutine that took Wait's channel.
func (n *Notifier) Broadcast() {
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// Life records how a channel ended: Done is closed by the first End, and Err
// returns the error given to it.
type Life struct {
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// NewLife returns a Life that has not ended.
func NewLife() *Life { return &Life{done: make(chan struct{})} }

// End ends the life with err unless it ended already; it reports whether
// this call ended it.
func (l *Life) End(err error) bool {
	first := false
	l.once.Do(func() {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		close(l.done)
		first = true
	})
	return first
}

// Done is closed once the life ended.
func (l *Life) Done() <-chan struct{} { return l.done }

// Err returns nil before the end, then the error given to End.
func (l *Life) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Ended reports whether the life ended, without blocking.
func (l *Life) Ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}
