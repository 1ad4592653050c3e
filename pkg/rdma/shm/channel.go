package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
)

// uncancellable is the context of waits that must not be abandoned: the
// rest of a message whose first fragment was published.
var uncancellable = context.Background()

// maxRegions bounds the regions of each side of a channel.
const maxRegions = 256

// channel is an shm rdma.Channel. Send and Recv work on the rings in the
// caller's goroutine; one goroutine per channel reads the control socket
// (regions, the peer's close, its death).
type channel struct {
	o               *options
	connID          string
	log             logrus.FieldLogger
	life            *core.Life
	ended           atomic.Bool // the life ended: checked by spinning waiters
	violation       atomic.Bool // the peer broke the protocol: deliver nothing more
	onProtocolError func()

	conn *net.UnixConn
	wmu  sync.Mutex // control socket writes

	lay      layout
	mem      []byte
	tx       *producer
	rx       *consumer
	rxWait   *waiter // we sleep on it as consumer of rx
	txWait   *waiter // we sleep on it as producer of tx
	peerRxFD int     // the peer sleeps on it as consumer of our tx: kick after publishing
	peerTxFD int     // the peer sleeps on it as producer of our rx: kick after consuming

	// The shared memory and the peer's descriptors are used under sendSem
	// (Send), recvSem (Recv) or opMu held shared (everything else); Close
	// takes all three before it releases them. Acked reads the consumer's
	// head under ackMu alone, while acksFinal is false: Close sets it under
	// ackMu before it unmaps.
	opMu     sync.RWMutex
	released bool

	sendSem  *core.Sem
	recvSem  *core.Sem
	rxSpin   spinner   // used under recvSem
	roomSpin spinner   // used under sendSem
	txSleep  *core.Sem // one goroutine sleeps on txWait at a time

	pubTail atomic.Uint64 // the tail we published, stored after each slot, for checking the consumer's head

	ackMu     sync.Mutex // guards the retention, the acknowledged head and the counters
	ackHead   uint64     // the consumer's head as last read by an acknowledgement
	lastSeq   uint64
	retained  *core.Retention
	sent      uint64
	written   uint64
	received  uint64
	acksFinal bool // Close read the head for the last time: the memory may be gone

	// ackedPub is ackedLocked as it was when ackHead was ackHeadPub: the
	// pair is stored under ackMu by Acked (when it changed) and Write, and
	// loaded by Acked without it. Send stores neither: its hot path keeps
	// the one atomic store it had (pubTail).
	ackedPub   atomic.Uint64
	ackHeadPub atomic.Uint64

	partial *partialMsg // a message whose Recv left halfway (recvSem)

	regMu      sync.RWMutex
	local      map[rdma.RegionKey]*region
	remote     map[rdma.RegionKey][]byte
	nextKey    rdma.RegionKey
	regionAcks map[rdma.RegionKey]chan bool

	localClosed atomic.Bool
	closed      chan struct{}
	ctlDone     chan struct{}
}

// partialMsg is the part of a message that a Recv consumed before leaving.
type partialMsg struct {
	seq     uint64
	flags   rdma.Flags
	hdr     []byte
	payload []byte // total length; the first got bytes are filled
}

var _ rdma.Channel = (*channel)(nil)

// channelParts are what the setup produced.
type channelParts struct {
	lay             layout
	mem             []byte
	txRing, rxRing  int
	rxWait, txWait  *waiter
	peerRxFD        int
	peerTxFD        int
	conn            *net.UnixConn
	connID          string
	log             logrus.FieldLogger
	onProtocolError func()
}

func newChannel(o *options, p channelParts) *channel {
	tx := ringAt(p.mem, p.lay, p.txRing)
	c := &channel{
		o:               o,
		connID:          p.connID,
		log:             p.log,
		life:            core.NewLife(),
		onProtocolError: p.onProtocolError,
		conn:            p.conn,
		lay:             p.lay,
		mem:             p.mem,
		tx:              newProducer(tx),
		rx:              &consumer{r: ringAt(p.mem, p.lay, p.rxRing)},
		rxWait:          p.rxWait,
		txWait:          p.txWait,
		peerRxFD:        p.peerRxFD,
		peerTxFD:        p.peerTxFD,
		sendSem:         core.NewSem(),
		recvSem:         core.NewSem(),
		txSleep:         core.NewSem(),
		retained:        core.NewRetention(int(p.lay.slots)),
		local:           make(map[rdma.RegionKey]*region),
		remote:          make(map[rdma.RegionKey][]byte),
		regionAcks:      make(map[rdma.RegionKey]chan bool),
		closed:          make(chan struct{}),
		ctlDone:         make(chan struct{}),
	}
	go c.control()
	return c
}

func (c *channel) ConnID() string   { return c.connID }
func (c *channel) Provider() string { return Name }

func (c *channel) errNow() error {
	if c.localClosed.Load() {
		return fmt.Errorf("shm %q: %w", c.connID, rdma.ErrClosed)
	}
	if c.ended.Load() {
		return c.life.Err()
	}
	return nil
}

// ---- sending ----

// refreshAcksLocked reads the consumer's head, checks it, and drops the
// messages it consumed from the retention; ackMu is held. (The producer
// keeps its own copy of the head, for room; see producer.refresh.)
func (c *channel) refreshAcksLocked() error {
	return c.advanceAcksLocked(atomic.LoadUint64(c.tx.r.head))
}

// advanceAcksLocked takes h as the consumer's head, checks it, and drops
// the messages it acknowledges. ackMu is held.
//
// The consumer may take a slot as soon as it is published, before Send
// stores pubTail (one Send at a time publishes one slot at a time): a head
// one past pubTail is the consumer's true progress, not a lie. (Storing
// pubTail first would delay every publication by an atomic store.)
func (c *channel) advanceAcksLocked(h uint64) error {
	if tail := c.pubTail.Load(); h < c.ackHead || h > tail+1 {
		return fmt.Errorf("%w: consumer head %d outside [%d, %d]", rdma.ErrProtocol, h, c.ackHead, tail+1)
	}
	if h == c.ackHead {
		// Nothing consumed since the last look: what was below h was
		// dropped then, and every message pushed since lies above it.
		return nil
	}
	c.ackHead = h
	for e := c.retained.Front(); e != nil && e.Aux < h; e = c.retained.Front() {
		c.retained.Pop()
	}
	return nil
}

// refreshAcksChecked is refreshAcksLocked for the readers of
// acknowledgements: a bad head disconnects the peer. ackMu is held.
func (c *channel) refreshAcksChecked() error {
	if c.acksFinal || c.violation.Load() {
		return nil
	}
	if err := c.refreshAcksLocked(); err != nil {
		return c.violated(err)
	}
	return nil
}

func (c *channel) ackedLocked() uint64 {
	if e := c.retained.Front(); e != nil {
		return e.Seq - 1
	}
	return c.lastSeq
}

// publishAckedLocked stores ackedLocked and the head it reflects for
// Acked's fast path, if they changed; ackMu is held.
func (c *channel) publishAckedLocked() uint64 {
	a := c.ackedLocked()
	if c.ackedPub.Load() != a || c.ackHeadPub.Load() != c.ackHead {
		c.ackedPub.Store(a)
		c.ackHeadPub.Store(c.ackHead) // second: a reader that loads it sees a
	}
	return a
}

func (c *channel) Send(ctx context.Context, m *rdma.Message) (uint64, error) {
	if err := m.Validate(); err != nil {
		return 0, err
	}
	m.Detach()
	if err := c.sendSem.Acquire(ctx, c.life.Done(), c.errNow); err != nil {
		return 0, err
	}
	defer c.sendSem.Release()
	if err := c.errNow(); err != nil {
		return 0, err
	}
	hdr, payload := m.Header, m.Payload
	inline := len(hdr)+len(payload) <= inlineSize
	fragMax := c.lay.fragMax()
	firstLen := 0
	if !inline {
		firstLen = min(len(payload), fragMax)
	}
	// Wait for room for the first fragment; ctx counts only until then.
	if err := c.waitRoom(ctx, firstLen); err != nil {
		return 0, err
	}
	frags := uint64(1)
	if !inline {
		frags = max(1, uint64((len(payload)+fragMax-1)/fragMax))
	}
	c.ackMu.Lock()
	if c.retained.Full() {
		if err := c.refreshAcksLocked(); err != nil {
			c.ackMu.Unlock()
			return 0, c.violated(err)
		}
	}
	c.lastSeq++
	seq := c.lastSeq
	// The message is acknowledged once the consumer passed its last slot.
	// (Pushed behind the others, it leaves ackedLocked as it was.)
	c.retained.Push(m, seq, c.tx.tail+frags-1)
	c.sent++
	c.ackMu.Unlock()

	d := desc{seq: seq, total: uint32(len(payload)), frag: fragFirst, flags: m.Flags, hdrLen: uint8(len(hdr))}
	if inline {
		d.frag |= fragLast | fragInline
		c.publish(&d, hdr, payload)
	} else {
		for off := 0; ; {
			n := min(len(payload)-off, fragMax)
			if off > 0 {
				// The message has started: finish it whatever ctx says (only
				// the channel's end stops it).
				if err := c.waitRoom(uncancellable, n); err != nil { //nolint:contextcheck // a started message is finished; the channel's end still stops it
					return 0, err
				}
			}
			if off+n == len(payload) {
				d.frag |= fragLast
			}
			c.publish(&d, hdr, payload[off:off+n])
			off += n
			if d.frag&fragLast != 0 {
				break
			}
			d = desc{seq: seq, total: uint32(len(payload))}
			hdr = nil
		}
	}
	m.Seq = seq
	return seq, nil
}

// publish writes a fragment into the ring, with what we consumed of the
// peer's ring as its acknowledgement, and wakes the peer if it sleeps.
func (c *channel) publish(d *desc, hdr, payload []byte) {
	d.ack = atomic.LoadUint64(c.rx.r.head) // our own cache line
	c.tx.put(d, hdr, payload)
	c.pubTail.Store(c.tx.tail)
	if atomic.LoadUint32(c.tx.r.consSleep) != 0 {
		kick(c.peerRxFD)
	}
}

// waitRoom waits until a fragment with n data bytes fits in tx: it polls
// the consumer's head for o.spin, then sleeps until the consumer kicks.
func (c *channel) waitRoom(ctx context.Context, n int) error {
	ok, err := c.roomNow(n)
	if ok || err != nil {
		return err
	}
	if c.roomSpin.wait(c.o.spin, func() bool { return atomic.LoadUint64(c.tx.r.head) != c.tx.head || c.ended.Load() }) {
		if ok, err := c.roomNow(n); ok || err != nil {
			return err
		}
	}
	return c.sleepUntil(ctx, func() (bool, error) { return c.roomNow(n) })
}

// roomNow reports whether a fragment with n data bytes fits; it reads the
// consumer's head only when the last one read leaves no room.
func (c *channel) roomNow(n int) (bool, error) {
	if err := c.errNow(); err != nil {
		return false, err
	}
	if c.tx.room(n) {
		return true, nil
	}
	if err := c.tx.refresh(); err != nil {
		return false, c.violated(err)
	}
	return c.tx.room(n), nil
}

// sleepUntil sleeps on txWait until cond holds. One goroutine sleeps at a
// time; the consumer kicks after it consumed if the flag says we sleep.
func (c *channel) sleepUntil(ctx context.Context, cond func() (bool, error)) error {
	if err := c.txSleep.Acquire(ctx, c.life.Done(), c.errNow); err != nil {
		return err
	}
	defer c.txSleep.Release()
	for {
		atomic.StoreUint32(c.tx.r.prodSleep, 1)
		ok, err := cond()
		if ok || err != nil {
			atomic.StoreUint32(c.tx.r.prodSleep, 0)
			return err
		}
		err = c.txWait.sleep(ctx)
		atomic.StoreUint32(c.tx.r.prodSleep, 0)
		if err != nil {
			return err
		}
	}
}

func (c *channel) Write(ctx context.Context, key rdma.RegionKey, off uint64, data []byte) (uint64, error) {
	if len(data) > rdma.MaxPayloadSize {
		return 0, fmt.Errorf("%w: write of %d bytes (max %d)", rdma.ErrTooLarge, len(data), rdma.MaxPayloadSize)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.opMu.RLock()
	defer c.opMu.RUnlock()
	if err := c.errNow(); err != nil {
		return 0, err
	}
	c.regMu.RLock()
	mem, ok := c.remote[key]
	if !ok {
		c.regMu.RUnlock()
		return 0, fmt.Errorf("%w: key %d", rdma.ErrUnknownRegion, key)
	}
	if size := uint64(len(mem)); off > size || uint64(len(data)) > size-off {
		c.regMu.RUnlock()
		return 0, fmt.Errorf("%w: %d bytes at %d in region %d of %d bytes", rdma.ErrOutOfBounds, len(data), off, key, size)
	}
	copy(mem[off:], data)
	c.regMu.RUnlock()
	c.ackMu.Lock()
	c.lastSeq++
	seq := c.lastSeq
	c.written++
	c.publishAckedLocked() // complete at once: behind an empty retention, acknowledged
	c.ackMu.Unlock()
	return seq, nil
}

// Acked returns without a lock when the last published pair is still the
// truth: the consumer's head was ackHeadPub, and nothing was published
// since (pubTail is still there), so nothing more can have been consumed;
// a write since published its own pair. Otherwise, under ackMu, it takes
// the head that the last message received carries, and reads the
// consumer's head itself (without opMu: see acksFinal) only when that
// carried head told nothing new; either way it publishes the pair. So a
// caller polling Acked sees the peer's progress: a first look that learns
// from the messages received is followed by one that reads the head.
//
// Either way it keeps Unacked's promise. Every value Acked returns was
// computed under ackMu after the messages it covers were popped from the
// retention, and Unacked refreshes and copies the retention under ackMu.
// So a message covered by a value Acked returned before Unacked was called
// is gone from the retention when Unacked copies it; and a message that
// Unacked copies is popped, and so can be reported, only after that copy
// is done.
func (c *channel) Acked() uint64 {
	if h := c.ackHeadPub.Load(); h == c.pubTail.Load() {
		// ackedPub was stored before ackHeadPub was h: this load sees
		// that value or a later one, all computed under ackMu.
		return c.ackedPub.Load()
	}
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	// The peer's messages carry its head (desc.ack). The shared head is a
	// cache line the peer writes as it consumes: reading it while the peer
	// takes a message we have just sent makes the peer's write of it wait
	// for the line to come back, on the peer's way to its answer. (A
	// member's Serve asks Acked right after it sent an answer, which the
	// caller is then receiving.) So it is read only when the carried head
	// told nothing new, as on the next look of a caller that polls; an
	// answer covers its call anyway, since the peer consumed the call
	// first. The mapping is there while acksFinal is false (see opMu).
	if c.acksFinal || c.violation.Load() {
		return c.publishAckedLocked()
	}
	if h := c.rx.r.lastAck(); h > c.ackHead {
		if err := c.advanceAcksLocked(h); err != nil {
			_ = c.violated(err)
		}
	} else if c.ackHead < c.pubTail.Load() {
		_ = c.refreshAcksChecked()
	}
	return c.publishAckedLocked()
}

func (c *channel) WaitAcked(ctx context.Context, seq uint64) error {
	c.opMu.RLock()
	defer c.opMu.RUnlock()
	c.ackMu.Lock()
	last := c.lastSeq
	c.ackMu.Unlock()
	if seq > last {
		return fmt.Errorf("%w: sequence number %d not sent yet (last %d)", rdma.ErrInvalidArgument, seq, last)
	}
	acked := func() (bool, error) {
		c.ackMu.Lock()
		defer c.ackMu.Unlock()
		if err := c.refreshAcksChecked(); err != nil {
			return false, err
		}
		if c.ackedLocked() >= seq {
			return true, nil
		}
		return false, c.errNow()
	}
	ok, err := acked()
	if ok || err != nil {
		return err
	}
	h := atomic.LoadUint64(c.tx.r.head)
	spin(c.o.spin, func() bool { return atomic.LoadUint64(c.tx.r.head) != h || c.ended.Load() })
	return c.sleepUntil(ctx, acked)
}

func (c *channel) Unacked() []rdma.Message {
	c.opMu.RLock()
	defer c.opMu.RUnlock()
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	_ = c.refreshAcksChecked()
	return c.retained.Messages()
}

func (c *channel) Stats() rdma.Stats {
	c.opMu.RLock()
	defer c.opMu.RUnlock()
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	_ = c.refreshAcksChecked()
	st := rdma.Stats{
		Sent:           c.sent,
		Received:       atomic.LoadUint64(&c.received),
		Written:        c.written,
		LastSeq:        c.lastSeq,
		Acked:          c.ackedLocked(),
		InFlight:       c.retained.Len(),
		InFlightBytes:  c.retained.Bytes(),
		WindowMessages: int(c.lay.slots),
		WindowBytes:    int(c.lay.dataSize),
	}
	if !c.released {
		st.Queued, st.QueuedBytes = c.rx.pending()
	}
	return st
}

// ---- receiving ----

func (c *channel) Recv(ctx context.Context, m *rdma.Message) error {
	if err := c.recvSem.Acquire(ctx, nil, nil); err != nil {
		return err
	}
	defer c.recvSem.Release()
	if c.localClosed.Load() {
		return fmt.Errorf("shm %q: %w", c.connID, rdma.ErrClosed)
	}
	if c.violation.Load() {
		return c.life.Err()
	}
	if p := c.partial; p != nil {
		copy(m.Prepare(p.seq, p.flags, p.hdr, len(p.payload)), p.payload[:c.rx.got])
		c.partial = nil
	}
	for {
		if c.violation.Load() {
			return c.life.Err()
		}
		if !c.rx.available() {
			if c.ended.Load() {
				if c.violation.Load() || !c.pendingAfterEnd() {
					return c.life.Err()
				}
				continue
			}
			if err := c.waitData(ctx); err != nil {
				if c.rx.inMsg {
					c.partial = &partialMsg{seq: m.Seq, flags: m.Flags, hdr: append([]byte(nil), m.Header...), payload: append([]byte(nil), m.Payload...)}
				}
				return err
			}
			continue
		}
		done, err := c.rx.take(m)
		if err != nil {
			return c.violated(err)
		}
		if atomic.LoadUint32(c.rx.r.prodSleep) != 0 {
			kick(c.peerTxFD)
		}
		if done {
			atomic.AddUint64(&c.received, 1)
			return nil
		}
	}
}

// pendingAfterEnd reports whether the peer published more fragments
// before the channel ended.
func (c *channel) pendingAfterEnd() bool { return c.rx.available() }

// waitData polls the ring for o.spin, then sleeps until the producer
// kicks (or the channel ends, or ctx ends).
func (c *channel) waitData(ctx context.Context) error {
	if c.rxSpin.wait(c.o.spin, func() bool { return c.rx.available() || c.ended.Load() }) {
		return nil
	}
	atomic.StoreUint32(c.rx.r.consSleep, 1)
	defer atomic.StoreUint32(c.rx.r.consSleep, 0)
	for {
		if c.rx.available() || c.ended.Load() {
			return nil
		}
		if err := c.rxWait.sleep(ctx); err != nil {
			return err
		}
	}
}

// ---- regions ----

type region struct {
	c      *channel
	key    rdma.RegionKey
	mem    []byte
	closed bool // guarded by c.regMu
}

func (r *region) Key() rdma.RegionKey { return r.key }
func (r *region) Bytes() []byte       { return r.mem }

func (r *region) Close() error {
	c := r.c
	c.regMu.Lock()
	if r.closed {
		c.regMu.Unlock()
		return nil
	}
	r.closed = true
	delete(c.local, r.key)
	c.regMu.Unlock()
	if c.errNow() == nil {
		_ = c.sendCtl(ctlMsg{typ: ctlRegionDel, a: uint32(r.key)})
	}
	return unix.Munmap(r.mem)
}

func (c *channel) RegisterRegion(size int) (rdma.Region, error) {
	if size <= 0 || size > rdma.MaxRegionSize {
		return nil, fmt.Errorf("%w: region of %d bytes (1 to %d)", rdma.ErrTooLarge, size, rdma.MaxRegionSize)
	}
	if err := c.errNow(); err != nil {
		return nil, err
	}
	c.regMu.Lock()
	if len(c.local) >= maxRegions {
		c.regMu.Unlock()
		return nil, fmt.Errorf("%w: %d regions registered", rdma.ErrTooLarge, maxRegions)
	}
	c.nextKey++
	key := c.nextKey
	acked := make(chan bool, 1)
	c.regionAcks[key] = acked
	c.regMu.Unlock()
	fd, mem, err := createMemfd(fmt.Sprintf("tether-region-%d", key), uint64(size), false)
	if err == nil {
		err = c.sendCtl(ctlMsg{typ: ctlRegionAdd, a: uint32(key), b: uint64(size)}, fd)
		_ = unix.Close(fd)
	}
	var ok bool
	if err == nil {
		timer := time.NewTimer(c.o.handshakeTimeout)
		select {
		case ok = <-acked:
			if !ok {
				err = fmt.Errorf("%w: the peer refused region %d of %d bytes", rdma.ErrRejected, key, size)
			}
		case <-c.life.Done():
			err = c.errNow()
		case <-timer.C:
			err = fmt.Errorf("%w: the peer did not map region %d within %v", rdma.ErrPeerLost, key, c.o.handshakeTimeout)
		}
		timer.Stop()
	}
	c.regMu.Lock()
	delete(c.regionAcks, key)
	if err == nil && c.released {
		err = fmt.Errorf("shm %q: %w", c.connID, rdma.ErrClosed)
	}
	var r *region
	if err == nil {
		r = &region{c: c, key: key, mem: mem}
		c.local[key] = r
	}
	c.regMu.Unlock()
	if err != nil {
		if mem != nil {
			_ = unix.Munmap(mem)
		}
		return nil, err
	}
	return r, nil
}

// ---- control and ending ----

func (c *channel) sendCtl(m ctlMsg, fds ...int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.o.closeTimeout))
	err := sendCtl(c.conn, m, fds...)
	_ = c.conn.SetWriteDeadline(time.Time{})
	return err
}

// control reads the control socket until it closes.
func (c *channel) control() {
	defer close(c.ctlDone)
	for {
		m, fds, err := recvCtl(c.conn)
		if err != nil {
			switch {
			case errors.Is(err, rdma.ErrProtocol):
				_ = c.violated(err)
			case c.errNow() == nil:
				c.end(fmt.Errorf("shm %q: %w: control socket: %w", c.connID, rdma.ErrPeerLost, err))
			}
			return
		}
		if err := c.handleCtl(m, fds); err != nil {
			_ = c.violated(err)
			return
		}
		if m.typ == ctlDisconnect {
			c.end(fmt.Errorf("shm %q: %w", c.connID, rdma.ErrPeerClosed))
			return
		}
	}
}

// handleCtl applies a control message; it owns fds.
func (c *channel) handleCtl(m ctlMsg, fds []int) error {
	defer closeFDs(fds)
	key := rdma.RegionKey(m.a)
	switch m.typ {
	case ctlRegionAdd:
		c.regMu.Lock()
		_, dup := c.remote[key]
		full := len(c.remote) >= maxRegions
		c.regMu.Unlock()
		if dup || key == 0 || m.c != 0 {
			return fmt.Errorf("%w: region %d added twice", rdma.ErrProtocol, key)
		}
		if full || m.b == 0 || m.b > rdma.MaxRegionSize {
			c.log.WithField("key", key).Warn("rdma peer's region refused: too many or too large")
			return c.sendCtl(ctlMsg{typ: ctlRegionAck, a: m.a, b: 1})
		}
		mem, err := mapPeerMemfd(fds[0], m.b, false)
		if err != nil {
			return err
		}
		c.regMu.Lock()
		if c.released {
			c.regMu.Unlock()
			_ = unix.Munmap(mem)
			return nil
		}
		c.remote[key] = mem
		c.regMu.Unlock()
		return c.sendCtl(ctlMsg{typ: ctlRegionAck, a: m.a})
	case ctlRegionAck:
		c.regMu.Lock()
		acked, ok := c.regionAcks[key]
		c.regMu.Unlock()
		if !ok || m.b > 1 || m.c != 0 {
			return fmt.Errorf("%w: unexpected acknowledgement of region %d", rdma.ErrProtocol, key)
		}
		acked <- m.b == 0
		return nil
	case ctlRegionDel:
		c.regMu.Lock()
		mem, ok := c.remote[key]
		delete(c.remote, key)
		c.regMu.Unlock()
		if !ok || m.b != 0 || m.c != 0 {
			return fmt.Errorf("%w: unknown region %d deleted", rdma.ErrProtocol, key)
		}
		return unix.Munmap(mem)
	case ctlDisconnect:
		return nil
	default:
		return fmt.Errorf("%w: setup message %d after the setup", rdma.ErrProtocol, m.typ)
	}
}

// end ends the channel's life with err and wakes every sleeper; it reports
// whether this call ended it.
func (c *channel) end(err error) bool {
	if !c.life.End(err) {
		return false
	}
	c.ended.Store(true)
	c.rxWait.kick()
	c.txWait.kick()
	return true
}

// violated disconnects a peer that broke the protocol; nothing more it
// sent is delivered. It returns the channel's error.
func (c *channel) violated(err error) error {
	if !c.life.Ended() && c.violation.CompareAndSwap(false, true) {
		// Counted and logged before the end is visible.
		c.log.WithError(err).Warn(core.LogProtocolViolation)
		if c.onProtocolError != nil {
			c.onProtocolError()
		}
	}
	if c.end(fmt.Errorf("shm %q: %w", c.connID, err)) {
		_ = c.conn.CloseWrite() // the peer sees the end; the socket is released by Close
	}
	return c.life.Err()
}

func (c *channel) Done() <-chan struct{} { return c.life.Done() }
func (c *channel) Err() error            { return c.life.Err() }

func (c *channel) Close() error {
	if !c.localClosed.CompareAndSwap(false, true) {
		<-c.closed
		return nil
	}
	if c.end(fmt.Errorf("shm %q: %w", c.connID, rdma.ErrClosed)) {
		_ = c.sendCtl(ctlMsg{typ: ctlDisconnect})
	}
	c.rxWait.kick()
	c.txWait.kick()
	// Every operation on the memory leaves (they were woken and see the end).
	_ = c.sendSem.Acquire(context.Background(), nil, nil)
	_ = c.recvSem.Acquire(context.Background(), nil, nil)
	c.opMu.Lock()
	c.ackMu.Lock()
	if !c.violation.Load() && c.ackHead != c.pubTail.Load() {
		// The last word on what was acknowledged. (With everything
		// acknowledged already, the page of the head, which a channel
		// that sent nothing never touched, is left alone.)
		_ = c.refreshAcksLocked()
	}
	c.acksFinal = true // Acked no longer reads the memory unmapped below
	c.ackMu.Unlock()
	_ = c.conn.Close()
	<-c.ctlDone
	c.regMu.Lock()
	c.released = true
	for key, mem := range c.remote {
		_ = unix.Munmap(mem)
		delete(c.remote, key)
	}
	for key, r := range c.local {
		r.closed = true
		_ = unix.Munmap(r.mem)
		delete(c.local, key)
	}
	c.regMu.Unlock()
	_ = unix.Munmap(c.mem)
	c.rxWait.close()
	c.txWait.close()
	_ = unix.Close(c.peerRxFD)
	_ = unix.Close(c.peerTxFD)
	c.opMu.Unlock()
	// Later calls see localClosed before they touch anything.
	c.recvSem.Release()
	c.sendSem.Release()
	close(c.closed)
	return nil
}
