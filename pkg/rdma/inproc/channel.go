package inproc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
)

// link joins two channel ends. dirs[i] holds what flows to end i: the
// messages queued for it (the sender's own slices, not copies), the regions
// end i registered, and the counters. Everything is guarded by mu, except
// that dir.acked may also be loaded without it.
type link struct {
	connID string
	window int

	mu   sync.Mutex
	dirs [2]dir
	ends [2]*end
}

type dir struct {
	queue     *core.Retention // sent to this end, not yet received: the sender's unacknowledged messages
	lastSeq   uint64          // last sequence number the other end assigned
	sent      uint64
	written   uint64
	received  uint64
	regions   map[rdma.RegionKey]*region // this end's regions
	nextKey   rdma.RegionKey
	recvWake  chan struct{} // wakes this end's Recv
	spaceWake chan struct{} // wakes the other end's (one) Send waiting for room
	ackWake   core.Notifier // wakes the other end's WaitAcked calls
	// acked is ackedLocked, stored under mu whenever it changes (the queue
	// is popped, or a write is added behind an empty queue), so that the
	// sender's Acked loads it without the mutex it shares with the peer.
	acked atomic.Uint64
}

// ackedLocked computes the cumulative acknowledgement of what the other end
// sent: everything before the oldest message the receiver has not taken.
// mu is held.
func (d *dir) ackedLocked() uint64 {
	if f := d.queue.Front(); f != nil {
		return f.Seq - 1
	}
	return d.lastSeq
}

// publishAckedLocked stores ackedLocked for Acked; mu is held.
func (d *dir) publishAckedLocked() { d.acked.Store(d.ackedLocked()) }

func newLink(connID string, window int) *link {
	l := &link{connID: connID, window: window}
	for i := range l.dirs {
		l.dirs[i] = dir{
			queue:     core.NewRetention(window),
			regions:   make(map[rdma.RegionKey]*region),
			recvWake:  make(chan struct{}, 1),
			spaceWake: make(chan struct{}, 1),
		}
		e := &end{l: l, i: i, life: core.NewLife(), recvSem: core.NewSem(), sendSem: core.NewSem()}
		wake := l.dirs[i].recvWake
		e.wakeRecv = func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		l.ends[i] = e
	}
	return l
}

// end is one side of a link; it implements rdma.Channel.
type end struct {
	l       *link
	i       int
	life    *core.Life
	recvSem *core.Sem // one Recv at a time
	// recvWatch wakes a waiting Recv when its context ends (recvWake
	// takes the token); guarded by l.mu.
	recvWatch core.Watch
	wakeRecv  func()
	sendSem   *core.Sem // one Send at a time waits for room
	closed    bool      // closed (or aborted) locally; guarded by l.mu
}

var _ rdma.Channel = (*end)(nil)

func (e *end) rx() *dir { return &e.l.dirs[e.i] }
func (e *end) tx() *dir { return &e.l.dirs[1-e.i] }

func (e *end) ConnID() string   { return e.l.connID }
func (e *end) Provider() string { return Name }

// errLocked returns why the end cannot send, or nil. l.mu is held.
func (e *end) errLocked() error {
	if e.closed {
		return fmt.Errorf("inproc %q: %w", e.l.connID, rdma.ErrClosed)
	}
	if e.life.Ended() {
		return e.life.Err()
	}
	return nil
}

func (e *end) Send(ctx context.Context, m *rdma.Message) (uint64, error) {
	if err := m.Validate(); err != nil {
		return 0, err
	}
	m.Detach()
	if err := e.sendSem.Acquire(ctx, nil, nil); err != nil {
		return 0, err
	}
	defer e.sendSem.Release()
	l := e.l
	tx := e.tx()
	l.mu.Lock()
	for {
		if err := e.errLocked(); err != nil {
			l.mu.Unlock()
			return 0, err
		}
		if !tx.queue.Full() {
			break
		}
		l.mu.Unlock()
		select {
		case <-tx.spaceWake:
		case <-e.life.Done():
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		l.mu.Lock()
	}
	tx.lastSeq++
	seq := tx.lastSeq
	tx.queue.Push(m, seq, 0)
	tx.sent++
	l.mu.Unlock()
	select {
	case tx.recvWake <- struct{}{}:
	default:
	}
	m.Seq = seq
	return seq, nil
}

func (e *end) Recv(ctx context.Context, m *rdma.Message) error {
	if err := e.recvSem.Acquire(ctx, nil, nil); err != nil {
		return err
	}
	defer e.recvSem.Release()
	l := e.l
	rx := e.rx()
	l.mu.Lock()
	for {
		if e.closed {
			l.mu.Unlock()
			return fmt.Errorf("inproc %q: %w", l.connID, rdma.ErrClosed)
		}
		if f := rx.queue.Front(); f != nil {
			copy(m.Prepare(f.Seq, f.Flags, f.Hdr[:f.HdrLen], len(f.Payload)), f.Payload)
			rx.queue.Pop()
			rx.publishAckedLocked()
			rx.received++
			rx.ackWake.Broadcast()
			l.mu.Unlock()
			select {
			case rx.spaceWake <- struct{}{}:
			default:
			}
			return nil
		}
		if e.life.Ended() {
			l.mu.Unlock()
			return e.life.Err()
		}
		if e.recvWatch.Arm(ctx, e.wakeRecv) {
			l.mu.Unlock()
			return ctx.Err()
		}
		l.mu.Unlock()
		// The end of the channel's life kicks recvWake too (finish): one
		// channel to wait on costs a wake-up less than a select.
		<-rx.recvWake
		l.mu.Lock()
	}
}

func (e *end) Write(ctx context.Context, key rdma.RegionKey, off uint64, data []byte) (uint64, error) {
	if len(data) > rdma.MaxPayloadSize {
		return 0, fmt.Errorf("%w: write of %d bytes (max %d)", rdma.ErrTooLarge, len(data), rdma.MaxPayloadSize)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l := e.l
	tx := e.tx()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := e.errLocked(); err != nil {
		return 0, err
	}
	r, ok := tx.regions[key]
	if !ok {
		return 0, fmt.Errorf("%w: key %d", rdma.ErrUnknownRegion, key)
	}
	if size := uint64(len(r.mem)); off > size || uint64(len(data)) > size-off {
		return 0, fmt.Errorf("%w: %d bytes at %d in region %d of %d bytes", rdma.ErrOutOfBounds, len(data), off, key, size)
	}
	copy(r.mem[off:], data)
	tx.lastSeq++
	tx.written++
	tx.publishAckedLocked()
	return tx.lastSeq, nil
}

func (e *end) RegisterRegion(size int) (rdma.Region, error) {
	if size <= 0 || size > rdma.MaxRegionSize {
		return nil, fmt.Errorf("%w: region of %d bytes (1 to %d)", rdma.ErrTooLarge, size, rdma.MaxRegionSize)
	}
	l := e.l
	rx := e.rx()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := e.errLocked(); err != nil {
		return nil, err
	}
	rx.nextKey++
	r := &region{e: e, key: rx.nextKey, mem: make([]byte, size)}
	rx.regions[r.key] = r
	return r, nil
}

// ackedLocked computes the cumulative acknowledgement of what this end sent.
func (e *end) ackedLocked() uint64 { return e.tx().ackedLocked() }

// Acked loads the value published under l.mu, without taking it: a
// caller that asks after every call (pkg/call) does not contend with the
// peer's Recv. Send does not publish: a message pushed behind the others
// leaves ackedLocked as it was.
//
// It keeps Unacked's promise. The store of a value a follows, under l.mu,
// the pops of every message up to a, and Unacked copies the queue under
// l.mu. If Acked returned a before Unacked was called, the store is before
// Unacked's critical section (otherwise that section would end before the
// store, which is before the load, which is before the section began), so
// Unacked finds none of those messages. If Unacked returned message s and
// a later Acked reports s, the pop of s, and so that report, comes after
// Unacked's copy of s: a caller reusing its buffer once Acked covers it
// does not race with the copy.
func (e *end) Acked() uint64 { return e.tx().acked.Load() }

func (e *end) WaitAcked(ctx context.Context, seq uint64) error {
	l := e.l
	tx := e.tx()
	l.mu.Lock()
	for {
		if e.ackedLocked() >= seq {
			l.mu.Unlock()
			return nil
		}
		if seq > tx.lastSeq {
			l.mu.Unlock()
			return fmt.Errorf("%w: sequence number %d not sent yet (last %d)", rdma.ErrInvalidArgument, seq, tx.lastSeq)
		}
		if err := e.errLocked(); err != nil {
			l.mu.Unlock()
			return err
		}
		wait := tx.ackWake.Wait()
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		l.mu.Lock()
	}
}

func (e *end) Unacked() []rdma.Message {
	e.l.mu.Lock()
	defer e.l.mu.Unlock()
	return e.tx().queue.Messages()
}

func (e *end) Stats() rdma.Stats {
	e.l.mu.Lock()
	defer e.l.mu.Unlock()
	tx, rx := e.tx(), e.rx()
	return rdma.Stats{
		Sent:           tx.sent,
		Received:       rx.received,
		Written:        tx.written,
		LastSeq:        tx.lastSeq,
		Acked:          e.ackedLocked(),
		InFlight:       tx.queue.Len(),
		InFlightBytes:  tx.queue.Bytes(),
		Queued:         rx.queue.Len(),
		QueuedBytes:    rx.queue.Bytes(),
		WindowMessages: e.l.window,
	}
}

func (e *end) Done() <-chan struct{} { return e.life.Done() }
func (e *end) Err() error            { return e.life.Err() }

func (e *end) Close() error {
	e.finish(fmt.Errorf("inproc %q: %w", e.l.connID, rdma.ErrClosed),
		fmt.Errorf("inproc %q: %w", e.l.connID, rdma.ErrPeerClosed))
	return nil
}

// abort ends the end as if its process had died: the peer sees ErrPeerLost.
func (e *end) abort() {
	e.finish(fmt.Errorf("inproc %q: %w", e.l.connID, rdma.ErrClosed),
		fmt.Errorf("inproc %q: %w (peer aborted)", e.l.connID, rdma.ErrPeerLost))
}

// finish closes the end locally. The peer, unless it ended already, ends
// with errPeer and may still receive what this end sent before; those
// payloads are copied now, because this end's caller owns them again.
func (e *end) finish(errSelf, errPeer error) {
	l := e.l
	l.mu.Lock()
	if e.closed {
		l.mu.Unlock()
		return
	}
	e.closed = true
	e.life.End(errSelf)
	e.recvWatch.Stop()
	peer := l.ends[1-e.i]
	tx, rx := e.tx(), e.rx()
	if !peer.closed {
		peer.life.End(errPeer)
		detachPayloads(tx.queue)
	}
	for key := range rx.regions {
		delete(rx.regions, key)
	}
	tx.ackWake.Broadcast()
	rx.ackWake.Broadcast()
	l.mu.Unlock()
	for _, d := range []*dir{tx, rx} {
		select {
		case d.recvWake <- struct{}{}:
		default:
		}
	}
}

// detachPayloads replaces the queued payloads by copies.
func detachPayloads(q *core.Retention) {
	q.Each(func(en *core.Entry) {
		en.Payload = append([]byte(nil), en.Payload...)
	})
}

type region struct {
	e   *end
	key rdma.RegionKey
	mem []byte
}

func (r *region) Key() rdma.RegionKey { return r.key }
func (r *region) Bytes() []byte       { return r.mem }

func (r *region) Close() error {
	l := r.e.l
	l.mu.Lock()
	defer l.mu.Unlock()
	rx := r.e.rx()
	if rx.regions[r.key] == r {
		delete(rx.regions, r.key)
	}
	return nil
}
