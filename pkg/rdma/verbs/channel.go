//go:build rdmaverbs && cgo

package verbs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
)

// slotInfo says what a posted send slot carries.
type slotInfo struct {
	seq   uint64 // the write's sequence number, for the last fragment of a write
	write bool
	close bool // the close frame
}

// channel is a verbs rdma.Channel. A goroutine per channel drains the
// completion queue; Send, Write and Recv work in the caller's goroutine.
type channel struct {
	ctx             context.Context
	cancel          context.CancelFunc
	o               *options
	connID          atomic.Pointer[string] // set once the listener knows it
	log             logrus.FieldLogger
	life            *core.Life
	onProtocolError func()
	q               *qp
	cm              *cmChannel // the dialer's own event channel; nil when accepted
	onClose         func()     // the listener forgets the ID

	sendSem *core.Sem // one sender at a time posts
	rsem    *core.Sem // one Recv at a time

	mu          sync.Mutex
	eng         *engine
	notify      core.Notifier
	hsIn        chan []byte
	free        []uint32 // free send slots, not counting ctlSlot
	ctlSlot     uint32   // reserved for acknowledgements from the completion goroutine
	ctlBusy     bool
	ctlPending  bool
	slotInfo    []slotInfo
	lastSeq     uint64
	retained    *core.Retention
	writes      []uint64 // writes posted, not completed
	sent        uint64
	written     uint64
	received    uint64
	ackSent     uint64
	pendMsgs    int
	pendBytes   int
	ackReqSent  uint64
	local       map[rdma.RegionKey]*region
	nextKey     rdma.RegionKey
	localClosed bool
	closeSent   bool
	violation   error
	stopped     bool
	lostTimer   *time.Timer

	ackTimer     *time.Timer
	progressDone chan struct{}
	cmDone       chan struct{}
	closed       chan struct{}
}

var _ rdma.Channel = (*channel)(nil)

func newChannel(ctx context.Context, o *options, q *qp, connID string, log logrus.FieldLogger) *channel {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &channel{
		ctx:          cctx,
		cancel:       cancel,
		o:            o,
		log:          log,
		life:         core.NewLife(),
		q:            q,
		sendSem:      core.NewSem(),
		rsem:         core.NewSem(),
		eng:          newEngine(q.slotSize, o.windowMessages, o.windowBytes),
		hsIn:         make(chan []byte, 4),
		ctlSlot:      uint32(q.slots - 1),
		slotInfo:     make([]slotInfo, q.slots),
		retained:     core.NewRetention(1), // sized to the peer's window by setup
		local:        make(map[rdma.RegionKey]*region),
		progressDone: make(chan struct{}),
		closed:       make(chan struct{}),
	}
	for i := range q.slots - 1 {
		c.free = append(c.free, uint32(i))
	}
	c.connID.Store(&connID)
	c.ackTimer = time.AfterFunc(time.Hour, c.ackNow)
	c.ackTimer.Stop()
	go c.progress()
	return c
}

func (c *channel) ConnID() string   { return *c.connID.Load() }
func (c *channel) Provider() string { return Name }

func (c *channel) errLocked() error {
	if c.localClosed {
		return fmt.Errorf("verbs %q: %w", c.ConnID(), rdma.ErrClosed)
	}
	if c.life.Ended() {
		return c.life.Err()
	}
	return nil
}

func (c *channel) errNow() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

// waitLocked waits for the next state change; mu is held, and held again on return.
func (c *channel) waitLocked(ctx context.Context) error {
	w := c.notify.Wait()
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- sending ----

func (c *channel) frameCapacity() int { return min(c.q.slotSize, c.eng.peerSlot) - headerSize }

func (c *channel) takeAckLocked() uint64 {
	c.ackSent = max(c.ackSent, c.eng.delivered)
	c.pendMsgs, c.pendBytes = 0, 0
	if c.ackSent >= c.eng.ackWant {
		c.eng.ackWant = 0
	}
	return c.ackSent
}

// takeSlotLocked returns a free send slot, waiting for one unless the
// channel ends. mu is held.
func (c *channel) takeSlotLocked() (uint32, error) {
	for len(c.free) == 0 {
		if err := c.errLocked(); err != nil {
			return 0, err
		}
		if err := c.waitLocked(c.ctx); err != nil {
			return 0, err
		}
	}
	s := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.slotInfo[s] = slotInfo{}
	return s, nil
}

// slotForLocked returns a free send slot for the next post of ps. When none
// is free it posts ps first, with mu released, so that their completions
// can free one. mu is held, and released when it returns an error.
func (c *channel) slotForLocked(ps *[]post) (uint32, error) {
	if len(c.free) == 0 && len(*ps) > 0 {
		c.mu.Unlock()
		if err := c.post(*ps); err != nil {
			return 0, err
		}
		*ps = (*ps)[:0]
		c.mu.Lock()
	}
	s, err := c.takeSlotLocked()
	if err != nil {
		c.mu.Unlock()
	}
	return s, err
}

// sendFrame posts one frame (a header and a body that fit a slot); sendSem
// is held.
func (c *channel) sendFrame(h header, body []byte) error {
	c.mu.Lock()
	s, err := c.takeSlotLocked()
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if h.typ != frameHandshake && h.typ != frameSetup {
		h.ack = c.takeAckLocked()
	}
	c.slotInfo[s].close = h.typ == frameClose
	c.mu.Unlock()
	slot := c.q.sendSlot(s)
	h.encode(slot)
	n := headerSize + copy(slot[headerSize:], body)
	return c.post([]post{{wrID: uint64(s), slot: s, len: uint32(n)}})
}

func (c *channel) post(ps []post) error {
	if err := c.q.postSends(ps); err != nil {
		c.fail(err)
		return c.life.Err()
	}
	return nil
}

func (c *channel) creditLocked(n int) bool {
	inflight := c.retained.Len()
	return inflight < c.eng.peerWinMsgs && (inflight == 0 || c.retained.Bytes()+n <= c.eng.peerWinBytes)
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
	n := len(m.Payload)
	c.mu.Lock()
	for !c.creditLocked(n) {
		if err := c.errLocked(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		// Ask for an acknowledgement of our last message (the peer only
		// sees messages: writes complete on their own).
		if last := c.eng.sentSeq; last > c.ackReqSent {
			c.ackReqSent = last
			c.mu.Unlock()
			if err := c.sendFrame(header{typ: frameAckReq, seq: last}, nil); err != nil {
				return 0, err
			}
			c.mu.Lock()
			continue
		}
		if err := c.waitLocked(ctx); err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.lastSeq++
	seq := c.lastSeq
	c.eng.sentSeq = seq
	c.retained.Push(m, seq, 0)
	c.sent++
	capacity := c.frameCapacity()
	c.mu.Unlock()

	// Fragment into slots, posting each run of slots we hold as one chain.
	hdr, payload := m.Header, m.Payload
	var ps []post
	for off, first := 0, true; first || off < len(payload); first = false {
		room := capacity - len(hdr)
		chunk := payload[off:min(len(payload), off+room)]
		c.mu.Lock()
		s, err := c.slotForLocked(&ps)
		if err != nil {
			return 0, err
		}
		h := header{typ: frameData, seq: seq, total: uint32(len(payload)), length: uint32(len(chunk)), ack: c.takeAckLocked()}
		c.mu.Unlock()
		if first {
			h.frag |= fragFirst
			h.flags, h.hdrLen = m.Flags, uint8(len(hdr))
		}
		if off+len(chunk) == len(payload) {
			h.frag |= fragLast
		}
		slot := c.q.sendSlot(s)
		h.encode(slot)
		k := headerSize + copy(slot[headerSize:], hdr)
		k += copy(slot[k:], chunk)
		ps = append(ps, post{wrID: uint64(s), slot: s, len: uint32(k)})
		off += len(chunk)
		hdr = nil
	}
	if err := c.post(ps); err != nil {
		return 0, err
	}
	m.Seq = seq
	return seq, nil
}

func (c *channel) Write(ctx context.Context, key rdma.RegionKey, off uint64, data []byte) (uint64, error) {
	if len(data) > rdma.MaxPayloadSize {
		return 0, fmt.Errorf("%w: write of %d bytes (max %d)", rdma.ErrTooLarge, len(data), rdma.MaxPayloadSize)
	}
	if err := c.sendSem.Acquire(ctx, c.life.Done(), c.errNow); err != nil {
		return 0, err
	}
	defer c.sendSem.Release()
	c.mu.Lock()
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	r, ok := c.eng.remote[key]
	if !ok {
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: key %d", rdma.ErrUnknownRegion, key)
	}
	if off > r.size || uint64(len(data)) > r.size-off {
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: %d bytes at %d in region %d of %d bytes", rdma.ErrOutOfBounds, len(data), off, key, r.size)
	}
	c.lastSeq++
	seq := c.lastSeq
	c.writes = append(c.writes, seq)
	c.written++
	c.mu.Unlock()
	var ps []post
	for pos := 0; pos < len(data) || pos == 0; {
		chunk := data[pos:min(len(data), pos+c.q.slotSize)]
		c.mu.Lock()
		s, err := c.slotForLocked(&ps)
		if err != nil {
			return 0, err
		}
		last := pos+len(chunk) == len(data)
		c.slotInfo[s] = slotInfo{seq: seq, write: last}
		c.mu.Unlock()
		copy(c.q.sendSlot(s), chunk)
		ps = append(ps, post{wrID: uint64(s), slot: s, len: uint32(len(chunk)), raddr: r.addr + off + uint64(pos), rkey: r.rkey, write: 1})
		pos += len(chunk)
		if len(data) == 0 {
			break
		}
	}
	if err := c.post(ps); err != nil {
		return 0, err
	}
	return seq, nil
}

type region struct {
	c      *channel
	key    rdma.RegionKey
	mem    *memRegion
	closed bool // guarded by c.mu
}

func (r *region) Key() rdma.RegionKey { return r.key }
func (r *region) Bytes() []byte       { return r.mem.bytes() }

func (r *region) Close() error {
	c := r.c
	c.mu.Lock()
	if r.closed {
		c.mu.Unlock()
		return nil
	}
	r.closed = true
	delete(c.local, r.key)
	alive := c.errLocked() == nil
	c.mu.Unlock()
	if alive && c.sendSem.Acquire(c.ctx, c.life.Done(), c.errNow) == nil {
		_ = c.sendFrame(header{typ: frameRegionDel, total: uint32(r.key)}, nil)
		c.sendSem.Release()
	}
	r.mem.release()
	return nil
}

func (c *channel) RegisterRegion(size int) (rdma.Region, error) {
	if size <= 0 || size > rdma.MaxRegionSize {
		return nil, fmt.Errorf("%w: region of %d bytes (1 to %d)", rdma.ErrTooLarge, size, rdma.MaxRegionSize)
	}
	if err := c.sendSem.Acquire(c.ctx, c.life.Done(), c.errNow); err != nil {
		return nil, err
	}
	defer c.sendSem.Release()
	c.mu.Lock()
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	if len(c.local) >= maxRegions {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %d regions registered", rdma.ErrTooLarge, maxRegions)
	}
	c.nextKey++
	key := c.nextKey
	c.mu.Unlock()
	mem, err := c.q.registerRegion(size)
	if err != nil {
		return nil, err
	}
	r := &region{c: c, key: key, mem: mem}
	if err := c.sendFrame(header{typ: frameRegionAdd, total: uint32(key), rkey: mem.rkey(), addr: mem.addr(), size: uint64(size)}, nil); err != nil {
		mem.release()
		return nil, err
	}
	c.mu.Lock()
	c.local[key] = r
	c.mu.Unlock()
	return r, nil
}

func (c *channel) ackedLocked() uint64 {
	first := uint64(math.MaxUint64)
	if e := c.retained.Front(); e != nil {
		first = e.Seq
	}
	if len(c.writes) > 0 && c.writes[0] < first {
		first = c.writes[0]
	}
	if first == math.MaxUint64 {
		return c.lastSeq
	}
	return first - 1
}

func (c *channel) Acked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ackedLocked()
}

func (c *channel) WaitAcked(ctx context.Context, seq uint64) error {
	c.mu.Lock()
	if seq > c.lastSeq {
		last := c.lastSeq
		c.mu.Unlock()
		return fmt.Errorf("%w: sequence number %d not sent yet (last %d)", rdma.ErrInvalidArgument, seq, last)
	}
	requested := false
	for c.ackedLocked() < seq {
		if err := c.errLocked(); err != nil {
			c.mu.Unlock()
			return err
		}
		// Messages up to seq wait for the peer: ask it to acknowledge the
		// last of them now. (Writes complete on their own.)
		target := min(seq, c.eng.sentSeq)
		if front := c.retained.Front(); !requested && front != nil && front.Seq <= seq && target > c.ackReqSent {
			requested = true
			c.ackReqSent = target
			c.mu.Unlock()
			if err := c.sendSem.Acquire(ctx, c.life.Done(), c.errNow); err != nil {
				return err
			}
			err := c.sendFrame(header{typ: frameAckReq, seq: target}, nil)
			c.sendSem.Release()
			if err != nil {
				return err
			}
			c.mu.Lock()
			continue
		}
		if err := c.waitLocked(ctx); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()
	return nil
}

func (c *channel) Unacked() []rdma.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retained.Messages()
}

func (c *channel) Stats() rdma.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, b := c.eng.queued()
	return rdma.Stats{
		Sent: c.sent, Received: c.received, Written: c.written, LastSeq: c.lastSeq, Acked: c.ackedLocked(),
		InFlight: c.retained.Len(), InFlightBytes: c.retained.Bytes(), Queued: n, QueuedBytes: b,
		WindowMessages: c.eng.winMsgs, WindowBytes: c.eng.winBytes,
	}
}

func (c *channel) Done() <-chan struct{} { return c.life.Done() }
func (c *channel) Err() error            { return c.life.Err() }

// ---- receiving ----

func (c *channel) Recv(ctx context.Context, m *rdma.Message) error {
	if err := c.rsem.Acquire(ctx, nil, nil); err != nil {
		return err
	}
	defer c.rsem.Release()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.localClosed {
			return fmt.Errorf("verbs %q: %w", c.ConnID(), rdma.ErrClosed)
		}
		if c.violation != nil {
			return c.violation
		}
		if c.eng.pop(m) {
			c.received++
			c.pendMsgs++
			c.pendBytes += len(m.Payload)
			if (c.eng.ackWant != 0 && c.eng.delivered >= c.eng.ackWant) || c.pendMsgs >= max(1, c.eng.winMsgs/8) || c.pendBytes >= c.eng.winBytes/8 {
				c.ackLocked()
			} else if !c.stopped {
				c.ackTimer.Reset(c.o.ackDelay)
			}
			return nil
		}
		if c.life.Ended() {
			return c.life.Err()
		}
		if err := c.waitLocked(ctx); err != nil {
			return err
		}
	}
}

// ackNow sends an acknowledgement if one is owed (the delayed one).
func (c *channel) ackNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.eng.delivered > c.ackSent {
		c.ackLocked()
	}
}

// ackLocked sends an acknowledgement on the reserved slot, or marks it
// owed until that slot is free. It never blocks. mu is held.
func (c *channel) ackLocked() {
	if c.errLocked() != nil || c.eng.stage != stageOpen {
		return
	}
	if c.ctlBusy {
		c.ctlPending = true
		return
	}
	c.ctlBusy, c.ctlPending = true, false
	h := header{typ: frameAck, ack: c.takeAckLocked()}
	slot := c.q.sendSlot(c.ctlSlot)
	h.encode(slot)
	if err := c.q.postSends([]post{{wrID: uint64(c.ctlSlot), slot: c.ctlSlot, len: headerSize}}); err != nil {
		c.ctlBusy = false
		c.failLocked(err)
	}
}

// ---- the completion goroutine ----

func (c *channel) progress() {
	defer close(c.progressDone)
	var buf []completion
	_ = c.q.pf.wait(func() bool {
		for {
			var emptied bool
			var err error
			buf, emptied, err = c.q.drain(buf[:0])
			if err != nil {
				c.fail(err)
				return true
			}
			for _, wc := range buf {
				c.complete(wc)
			}
			if emptied {
				break
			}
		}
		c.mu.Lock()
		stop := c.stopped
		c.mu.Unlock()
		return stop
	})
}

// complete applies one work completion.
func (c *channel) complete(wc completion) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wc.status != wcSuccess {
		// After the queue pair broke (a disconnection), the rest is flushed:
		// the frames before the error were applied in order, so whether the
		// peer said goodbye first is known.
		if c.eng.stage == stageClosed {
			c.endLocked(fmt.Errorf("verbs %q: %w", c.ConnID(), rdma.ErrPeerClosed))
		} else if !c.localClosed {
			c.failLocked(fmt.Errorf("work completion: %s", statusString(wc.status)))
		}
		return
	}
	slot := uint32(wc.wrID)
	if wc.opcode&wcRecv != 0 {
		c.received1Locked(slot, wc.length)
		return
	}
	if int(slot) >= len(c.slotInfo) {
		return
	}
	if slot == c.ctlSlot {
		c.ctlBusy = false
		if c.ctlPending {
			c.ackLocked()
		}
		return
	}
	info := c.slotInfo[slot]
	c.free = append(c.free, slot)
	if info.write && len(c.writes) > 0 && c.writes[0] == info.seq {
		c.writes = c.writes[1:]
	}
	if info.close {
		c.closeSent = true
	}
	c.notify.Broadcast()
}

// received1Locked handles a received slot and re-posts it.
func (c *channel) received1Locked(slot uint32, n int) {
	if int(slot) >= c.q.slots || n > c.q.slotSize {
		c.violatedLocked(fmt.Errorf("%w: completion for slot %d of %d bytes", rdma.ErrProtocol, slot, n))
		return
	}
	if c.violation != nil || c.localClosed {
		return
	}
	h, body, err := decodeFrame(c.q.recvSlot(slot)[:n])
	var ev event
	if err == nil {
		ev, err = c.eng.handle(&h, body)
	}
	if err != nil {
		c.violatedLocked(err)
		return
	}
	if err := c.q.postRecvs([]uint32{slot}); err != nil {
		c.failLocked(err)
		return
	}
	if ev&evHandshake != 0 {
		msg := append([]byte(nil), c.eng.hs...)
		select {
		case c.hsIn <- msg:
		default:
			c.violatedLocked(fmt.Errorf("%w: too many handshake messages", rdma.ErrProtocol))
			return
		}
	}
	if ev&evAcked != 0 {
		c.retained.AckUpTo(c.eng.peerAck)
	}
	if ev&evAckReq != 0 && c.eng.delivered >= c.eng.ackWant && c.eng.ackWant > c.ackSent {
		c.ackLocked()
	}
	if ev&evClose != 0 {
		c.endLocked(fmt.Errorf("verbs %q: %w", c.ConnID(), rdma.ErrPeerClosed))
	}
	c.notify.Broadcast()
}

// ---- the handshake over the queue pair ----

// hsConn carries handshake messages in handshake frames.
type hsConn struct {
	ctx      context.Context
	c        *channel
	deadline time.Time
}

func (h hsConn) WriteMsg(msg []byte) error {
	if err := h.c.sendSem.Acquire(h.c.ctx, h.c.life.Done(), h.c.errNow); err != nil {
		return err
	}
	defer h.c.sendSem.Release()
	return h.c.sendFrame(header{typ: frameHandshake, length: uint32(len(msg))}, msg)
}

func (h hsConn) ReadMsg(buf []byte) ([]byte, error) {
	timer := time.NewTimer(time.Until(h.deadline))
	defer timer.Stop()
	select {
	case msg := <-h.c.hsIn:
		return buf[:copy(buf, msg)], nil
	case <-h.c.life.Done():
		return nil, h.c.life.Err()
	case <-h.ctx.Done():
		return nil, h.ctx.Err()
	case <-timer.C:
		return nil, fmt.Errorf("%w: handshake timed out", rdma.ErrPeerLost)
	}
}

// setup sends our setup and waits for the peer's.
func (c *channel) setup(ctx context.Context, deadline time.Time) error {
	if err := c.sendSem.Acquire(ctx, c.life.Done(), c.errNow); err != nil {
		return err
	}
	err := c.sendFrame(header{typ: frameSetup, addr: uint64(c.q.slotSize), size: setupWindow(c.o.windowMessages, c.o.windowBytes)}, nil)
	c.sendSem.Release()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.eng.stage != stageOpen {
		if err := c.errLocked(); err != nil {
			return err
		}
		if err := c.waitLocked(ctx); err != nil {
			return fmt.Errorf("%w: no setup from the peer: %w", rdma.ErrPeerLost, err)
		}
	}
	if c.eng.peerSlot < headerSize+rdma.MaxHeaderSize+1 {
		return fmt.Errorf("%w: the peer's slots of %d bytes are too small", rdma.ErrProtocol, c.eng.peerSlot)
	}
	c.retained = core.NewRetention(c.eng.peerWinMsgs)
	return nil
}

// ---- ending ----

// onDisconnected is called for the connection manager's disconnection: the
// flushed completions normally end the channel first, with the right
// reason; this is the fallback.
func (c *channel) onDisconnected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.lostTimer != nil {
		return
	}
	c.lostTimer = time.AfterFunc(c.o.closeTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.eng.stage == stageClosed {
			c.endLocked(fmt.Errorf("verbs %q: %w", c.ConnID(), rdma.ErrPeerClosed))
		} else {
			c.endLocked(fmt.Errorf("verbs %q: %w: disconnected", c.ConnID(), rdma.ErrPeerLost))
		}
	})
}

func (c *channel) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

func (c *channel) failLocked(err error) {
	if c.localClosed {
		return
	}
	c.endLocked(fmt.Errorf("verbs %q: %w: %w", c.ConnID(), rdma.ErrPeerLost, err))
}

func (c *channel) endLocked(err error) {
	if c.life.End(err) {
		c.notify.Broadcast()
	}
}

// violatedLocked disconnects a peer that broke the protocol and drops what
// it sent that was still waiting.
func (c *channel) violatedLocked(err error) {
	if c.violation != nil || c.life.Ended() {
		return
	}
	c.violation = fmt.Errorf("verbs %q: %w", c.ConnID(), err)
	c.eng.drop()
	c.log.WithError(err).Warn(core.LogProtocolViolation)
	if c.onProtocolError != nil {
		c.onProtocolError()
	}
	c.endLocked(c.violation)
	c.q.disconnect()
}

func (c *channel) Close() error {
	c.mu.Lock()
	if c.localClosed {
		c.mu.Unlock()
		<-c.closed
		return nil
	}
	c.localClosed = true
	open := c.eng.stage == stageOpen
	alive := c.life.End(fmt.Errorf("verbs %q: %w", c.ConnID(), rdma.ErrClosed))
	c.notify.Broadcast()
	c.mu.Unlock()
	if alive && open {
		c.sayGoodbye()
	}
	c.q.disconnect()
	c.mu.Lock()
	c.stopped = true
	c.ackTimer.Stop()
	if c.lostTimer != nil {
		c.lostTimer.Stop()
	}
	c.mu.Unlock()
	c.q.pf.close() // wakes the completion goroutine
	<-c.progressDone
	if c.cm != nil {
		c.cm.pf.close()
		<-c.cmDone
	}
	c.mu.Lock()
	for key, r := range c.local {
		r.closed = true
		r.mem.release()
		delete(c.local, key)
	}
	c.mu.Unlock()
	c.q.destroy()
	if c.onClose != nil {
		c.onClose()
	}
	cmDestroyID(c.q.id)
	if c.cm != nil {
		c.cm.close()
	}
	c.cancel()
	close(c.closed)
	return nil
}

// sayGoodbye sends the close frame and waits (closeTimeout at most) for its
// completion, so that the peer reads it before the disconnection.
func (c *channel) sayGoodbye() {
	ctx, cancel := context.WithTimeout(c.ctx, c.o.closeTimeout)
	defer cancel()
	if c.sendSem.Acquire(ctx, nil, nil) != nil {
		return
	}
	c.mu.Lock()
	s, ok := uint32(0), len(c.free) > 0
	if ok {
		s = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		c.slotInfo[s] = slotInfo{close: true}
	}
	h := header{typ: frameClose, ack: c.takeAckLocked()}
	c.mu.Unlock()
	if ok {
		h.encode(c.q.sendSlot(s))
		if c.q.postSends([]post{{wrID: uint64(s), slot: s, len: headerSize}}) == nil {
			c.mu.Lock()
			for !c.closeSent && ctx.Err() == nil {
				if err := c.waitLocked(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					break
				}
			}
			c.mu.Unlock()
		}
	}
	c.sendSem.Release()
}
