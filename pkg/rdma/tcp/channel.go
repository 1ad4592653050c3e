package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
)

const (
	// readBufSize is the channel's read buffer: headers and small bodies are
	// read through it, larger bodies straight into their destination.
	readBufSize = 16 << 10
	// smallFrame is the largest body copied next to its header for a single
	// write; larger bodies go out with a vectored write.
	smallFrame = 4 << 10
	// maxRegions bounds the regions of each side of a channel.
	maxRegions = 1024
	// maxFreeBuffers bounds the receive buffers kept for reuse.
	maxFreeBuffers = 16
)

// aLongTimeAgo is a deadline in the past, which interrupts a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// errCloseFrame is how a holder learns that the peer closed cleanly.
var errCloseFrame = errors.New("close frame")

// errPreempted tells the background reader to give the socket up.
var errPreempted = errors.New("preempted")

// queued is a message that arrived before a Recv asked for it.
type queued struct {
	seq    uint64
	flags  rdma.Flags
	hdrLen uint8
	hdr    [rdma.MaxHeaderSize]byte
	buf    []byte
}

// rxFrame is the frame the read-side holder is in the middle of; it
// survives a holder that leaves (its context ended, or it was preempted),
// so that the next holder carries on where it stopped.
type rxFrame struct {
	f       frame
	active  bool
	hdrGot  int
	hdr     [rdma.MaxHeaderSize]byte
	chosen  bool          // the payload's destination is chosen
	dst     []byte        // where the payload goes
	direct  *rdma.Message // the Recv whose message dst belongs to, if any
	discard bool          // a write into a region closed meanwhile
	got     int
}

// channel is a tcp rdma.Channel.
//
// Reading the socket is a token, held by at most one goroutine at a time: a
// Recv (which then reads the next message straight into its Message), a
// Send or WaitAcked waiting for an acknowledgement, or the background
// goroutine, which only takes the socket when the application has left it
// idle for o.idle and gives it up as soon as a Recv wants it.
type channel struct {
	ctx             context.Context // the channel's lifetime, for its own background work
	cancel          context.CancelFunc
	o               *options
	connID          string
	nc              net.Conn
	log             logrus.FieldLogger
	life            *core.Life
	onProtocolError func()

	winMsgs, winBytes         int // what we accept unacknowledged
	peerWinMsgs, peerWinBytes int // what the peer accepts

	wsem   *core.Sem // serialises writes to the socket
	wbuf   []byte    // guarded by wsem
	vecArr [2][]byte
	vec    net.Buffers

	rsem *core.Sem // one Recv at a time

	mu sync.Mutex
	// sending
	lastSeq    uint64
	peerAck    uint64
	ackedPub   atomic.Uint64 // peerAck, stored under mu after the retention is popped: Acked loads it alone
	retained   *core.Retention
	sent       uint64
	written    uint64
	ackReqSent uint64
	remote     map[rdma.RegionKey]uint64
	// receiving
	lastRx    uint64 // last sequence number whose header was read
	lastDone  uint64 // last sequence number fully received
	queue     []queued
	qhead     int
	qlen      int
	qbytes    int
	received  uint64
	ackSent   uint64
	pendMsgs  int // delivered since the last acknowledgement we sent
	pendBytes int
	ackWant   uint64
	ackUrgent bool
	local     map[rdma.RegionKey]*region
	nextKey   rdma.RegionKey
	free      [][]byte
	// the read token
	token         bool
	bgHolds       bool
	preempt       bool
	deadlineArmed bool
	// holdDone is the Done channel of the context the token holder waits
	// with; watch the context registration (watchLocked).
	holdDone     <-chan struct{}
	watch        core.Watch
	onContextEnd func()
	notify       core.Notifier
	localClosed  bool
	violation    error // the peer broke the protocol: nothing more is delivered
	stopped      bool
	idleWG       sync.WaitGroup

	// owned by the token holder
	rbuf       []byte
	rpos, rend int
	rx         rxFrame

	timer  *time.Timer
	bgWake chan struct{}
	bgDone chan struct{}
	closed chan struct{}
}

var _ rdma.Channel = (*channel)(nil)

// newChannel starts a channel on an authenticated connection; ctx carries
// values for the channel's lifetime, not its cancellation.
func newChannel(ctx context.Context, o *options, nc net.Conn, connID string, peerWinMsgs, peerWinBytes int, log logrus.FieldLogger, onProtocolError func()) *channel {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &channel{
		ctx:             cctx,
		cancel:          cancel,
		o:               o,
		connID:          connID,
		nc:              nc,
		log:             log,
		life:            core.NewLife(),
		onProtocolError: onProtocolError,
		winMsgs:         o.windowMessages,
		winBytes:        o.windowBytes,
		peerWinMsgs:     peerWinMsgs,
		peerWinBytes:    peerWinBytes,
		wsem:            core.NewSem(),
		wbuf:            make([]byte, headerSize+rdma.MaxHeaderSize+smallFrame),
		rsem:            core.NewSem(),
		retained:        core.NewRetention(peerWinMsgs),
		remote:          make(map[rdma.RegionKey]uint64),
		queue:           make([]queued, o.windowMessages),
		local:           make(map[rdma.RegionKey]*region),
		rbuf:            make([]byte, readBufSize),
		bgWake:          make(chan struct{}, 1),
		bgDone:          make(chan struct{}),
		closed:          make(chan struct{}),
	}
	c.onContextEnd = c.interruptIfContextEnded
	c.timer = time.AfterFunc(o.idle, c.onIdle)
	go c.background()
	return c
}

func (c *channel) ConnID() string   { return c.connID }
func (c *channel) Provider() string { return Name }

// ---- sending ----

// sendErrLocked says why nothing can be sent, or nil.
func (c *channel) sendErrLocked() error {
	if c.localClosed {
		return fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrClosed)
	}
	if c.life.Ended() {
		return c.life.Err()
	}
	return nil
}

func (c *channel) sendErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendErrLocked()
}

// creditLocked reports whether a message of n bytes fits the peer's window.
func (c *channel) creditLocked(n int) bool {
	inflight := c.retained.Len()
	return inflight < c.peerWinMsgs && (inflight == 0 || c.retained.Bytes()+n <= c.peerWinBytes)
}

// ackLevelLocked is our cumulative acknowledgement: every message up to it
// was returned by Recv, every write placed.
func (c *channel) ackLevelLocked() uint64 {
	if c.qlen > 0 {
		return c.queue[c.qhead].seq - 1
	}
	return c.lastDone
}

// takeAckLocked returns the acknowledgement to piggyback on a frame and
// records it as sent.
func (c *channel) takeAckLocked() uint64 {
	level := c.ackLevelLocked()
	if level > c.ackSent {
		c.ackSent = level
	}
	c.pendMsgs, c.pendBytes = 0, 0
	c.ackUrgent = false
	if c.ackSent >= c.ackWant {
		c.ackWant = 0
	}
	return c.ackSent
}

// armIdleLocked (re)starts the idle timer.
func (c *channel) armIdleLocked(d time.Duration) {
	if !c.stopped {
		c.timer.Reset(d)
	}
}

func (c *channel) Send(ctx context.Context, m *rdma.Message) (uint64, error) {
	if err := m.Validate(); err != nil {
		return 0, err
	}
	m.Detach()
	n := len(m.Payload)
	for {
		if err := c.wsem.Acquire(ctx, c.life.Done(), c.sendErr); err != nil {
			return 0, err
		}
		c.mu.Lock()
		if err := c.sendErrLocked(); err != nil {
			c.mu.Unlock()
			c.wsem.Release()
			return 0, err
		}
		if c.creditLocked(n) {
			break
		}
		last := c.lastSeq
		c.mu.Unlock()
		c.wsem.Release()
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// Ask the receiver to acknowledge as soon as it can, then wait.
		if err := c.requestAck(ctx, last); err != nil {
			return 0, err
		}
		if err := c.progress(ctx, func() bool { return c.creditLocked(n) }); err != nil {
			return 0, err
		}
	}
	c.lastSeq++
	seq := c.lastSeq
	c.retained.Push(m, seq, 0)
	c.sent++
	f := frame{typ: frameData, flags: m.Flags, hdrLen: uint8(len(m.Header)), length: uint32(n), seq: seq, ack: c.takeAckLocked()}
	c.mu.Unlock()
	err := c.writeFrame(&f, m.Header, m.Payload)
	c.wsem.Release()
	if err != nil {
		return 0, err
	}
	m.Seq = seq
	return seq, nil
}

// writeFrame writes a frame and its body; wsem is held. A write error ends
// the channel. A frame cannot be taken back halfway, so the write is not
// cut short when the caller's context ends: it waits for the peer to read
// (the peer always reads within its window), and Close or the transport's
// user timeout cut off a write to a peer that stopped reading.
func (c *channel) writeFrame(f *frame, hdr, payload []byte) error {
	err := c.writeRaw(f, hdr, payload)
	if err != nil {
		return c.ioFailed(fmt.Errorf("write: %w", err))
	}
	// Flush an acknowledgement that a Recv could not send while we wrote.
	c.mu.Lock()
	urgent := c.ackUrgent && c.ackLevelLocked() > c.ackSent
	var ack frame
	if urgent {
		ack = frame{typ: frameAck, ack: c.takeAckLocked()}
	}
	c.mu.Unlock()
	if urgent {
		if err := c.writeRaw(&ack, nil, nil); err != nil {
			return c.ioFailed(fmt.Errorf("write: %w", err))
		}
	}
	return nil
}

// writeRaw writes one frame: small ones with one write, others vectored.
func (c *channel) writeRaw(f *frame, hdr, payload []byte) error {
	f.encode(c.wbuf)
	n := headerSize + copy(c.wbuf[headerSize:], hdr)
	if len(payload) <= smallFrame {
		n += copy(c.wbuf[n:], payload)
		_, err := c.nc.Write(c.wbuf[:n])
		return err
	}
	c.vecArr[0], c.vecArr[1] = c.wbuf[:n], payload
	c.vec = c.vecArr[:]
	_, err := c.vec.WriteTo(c.nc)
	c.vecArr[1] = nil
	return err
}

// sendControl writes a frame without body (acknowledgement, request,
// region change), waiting for the socket like a Send.
func (c *channel) sendControl(ctx context.Context, f frame) error {
	if err := c.wsem.Acquire(ctx, c.life.Done(), c.sendErr); err != nil {
		return err
	}
	defer c.wsem.Release()
	c.mu.Lock()
	if err := c.sendErrLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	f.ack = c.takeAckLocked()
	c.mu.Unlock()
	return c.writeFrame(&f, nil, nil)
}

// requestAck asks the peer to acknowledge seq as soon as it delivered it.
func (c *channel) requestAck(ctx context.Context, seq uint64) error {
	c.mu.Lock()
	if seq <= c.ackReqSent || seq <= c.peerAck {
		c.mu.Unlock()
		return nil
	}
	c.ackReqSent = seq
	c.mu.Unlock()
	return c.sendControl(ctx, frame{typ: frameAckReq, seq: seq})
}

// flushAck sends a bare acknowledgement if we owe one.
func (c *channel) flushAck() {
	c.mu.Lock()
	owe := c.ackLevelLocked() > c.ackSent && !c.life.Ended()
	c.mu.Unlock()
	if owe {
		_ = c.sendControl(c.ctx, frame{typ: frameAck})
	}
}

func (c *channel) Write(ctx context.Context, key rdma.RegionKey, off uint64, data []byte) (uint64, error) {
	if len(data) > rdma.MaxPayloadSize {
		return 0, fmt.Errorf("%w: write of %d bytes (max %d)", rdma.ErrTooLarge, len(data), rdma.MaxPayloadSize)
	}
	if err := c.wsem.Acquire(ctx, c.life.Done(), c.sendErr); err != nil {
		return 0, err
	}
	c.mu.Lock()
	if err := c.sendErrLocked(); err != nil {
		c.mu.Unlock()
		c.wsem.Release()
		return 0, err
	}
	size, ok := c.remote[key]
	if !ok {
		c.mu.Unlock()
		c.wsem.Release()
		return 0, fmt.Errorf("%w: key %d", rdma.ErrUnknownRegion, key)
	}
	if off > size || uint64(len(data)) > size-off {
		c.mu.Unlock()
		c.wsem.Release()
		return 0, fmt.Errorf("%w: %d bytes at %d in region %d of %d bytes", rdma.ErrOutOfBounds, len(data), off, key, size)
	}
	c.lastSeq++
	seq := c.lastSeq
	c.written++
	f := frame{typ: frameWrite, length: uint32(len(data)), seq: seq, key: key, off: off, ack: c.takeAckLocked()}
	c.mu.Unlock()
	err := c.writeFrame(&f, nil, data)
	c.wsem.Release()
	if err != nil {
		return 0, err
	}
	return seq, nil
}

func (c *channel) RegisterRegion(size int) (rdma.Region, error) {
	if size <= 0 || size > rdma.MaxRegionSize {
		return nil, fmt.Errorf("%w: region of %d bytes (1 to %d)", rdma.ErrTooLarge, size, rdma.MaxRegionSize)
	}
	c.mu.Lock()
	if err := c.sendErrLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	if len(c.local) >= maxRegions {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %d regions registered", rdma.ErrTooLarge, maxRegions)
	}
	c.nextKey++
	r := &region{c: c, key: c.nextKey, mem: make([]byte, size)}
	c.local[r.key] = r
	c.mu.Unlock()
	if err := c.sendControl(c.ctx, frame{typ: frameRegionAdd, key: r.key, off: uint64(size)}); err != nil {
		c.mu.Lock()
		delete(c.local, r.key)
		c.mu.Unlock()
		return nil, err
	}
	return r, nil
}

type region struct {
	c   *channel
	key rdma.RegionKey
	mem []byte
}

func (r *region) Key() rdma.RegionKey { return r.key }
func (r *region) Bytes() []byte       { return r.mem }

func (r *region) Close() error {
	c := r.c
	c.mu.Lock()
	if c.local[r.key] != r {
		c.mu.Unlock()
		return nil
	}
	delete(c.local, r.key)
	alive := c.sendErrLocked() == nil
	c.mu.Unlock()
	if alive {
		_ = c.sendControl(c.ctx, frame{typ: frameRegionDel, key: r.key})
	}
	return nil
}

// Acked loads peerAck's mirror without taking mu, which the token holder
// takes for every frame. The mirror is stored under mu after the messages
// it covers left the retention, and Unacked copies the retention under mu:
// a value Acked returned is never contradicted by a later Unacked, and an
// Unacked copy of a message is finished before any Acked can report it.
func (c *channel) Acked() uint64 { return c.ackedPub.Load() }

func (c *channel) WaitAcked(ctx context.Context, seq uint64) error {
	c.mu.Lock()
	if seq <= c.peerAck {
		c.mu.Unlock()
		return nil
	}
	if seq > c.lastSeq {
		last := c.lastSeq
		c.mu.Unlock()
		return fmt.Errorf("%w: sequence number %d not sent yet (last %d)", rdma.ErrInvalidArgument, seq, last)
	}
	c.mu.Unlock()
	if err := c.requestAck(ctx, seq); err != nil {
		return err
	}
	return c.progress(ctx, func() bool { return c.peerAck >= seq })
}

func (c *channel) Unacked() []rdma.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retained.Messages()
}

func (c *channel) Stats() rdma.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return rdma.Stats{
		Sent:           c.sent,
		Received:       c.received,
		Written:        c.written,
		LastSeq:        c.lastSeq,
		Acked:          c.peerAck,
		InFlight:       c.retained.Len(),
		InFlightBytes:  c.retained.Bytes(),
		Queued:         c.qlen,
		QueuedBytes:    c.qbytes,
		WindowMessages: c.winMsgs,
		WindowBytes:    c.winBytes,
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
	for {
		if c.localClosed {
			c.mu.Unlock()
			return fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrClosed)
		}
		if c.violation != nil {
			err := c.violation
			c.mu.Unlock()
			return err
		}
		if c.qlen > 0 {
			q := c.queue[c.qhead]
			c.queue[c.qhead].buf = nil
			c.qhead = (c.qhead + 1) % len(c.queue)
			c.qlen--
			c.qbytes -= len(q.buf)
			c.mu.Unlock()
			copy(m.Prepare(q.seq, q.flags, q.hdr[:q.hdrLen], len(q.buf)), q.buf)
			c.mu.Lock()
			c.putBufLocked(q.buf)
			c.deliveredLocked(len(q.buf))
			return nil // deliveredLocked unlocked mu
		}
		if c.life.Ended() {
			c.mu.Unlock()
			return c.life.Err()
		}
		if !c.token {
			c.takeTokenLocked(false)
			c.watchLocked(ctx)
			c.mu.Unlock()
			if delivered, err := c.recvDirect(ctx, m); delivered || err != nil {
				return err
			}
			c.mu.Lock() // a message was queued meanwhile
			continue
		}
		if c.bgHolds && !c.preempt {
			c.preempt = true
			c.interruptLocked()
		}
		wait := c.notify.Wait()
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
}

// recvDirect reads the socket as the token holder until a message arrives,
// straight into m, or until a message was queued (the end of one whose
// reader left), which it leaves for the caller to take.
func (c *channel) recvDirect(ctx context.Context, m *rdma.Message) (bool, error) {
	delivered, err := c.pump(ctx, m, false, func() bool { return c.qlen > 0 })
	c.mu.Lock()
	c.releaseTokenLocked(false)
	if delivered {
		c.deliveredLocked(len(m.Payload))
		return true, nil
	}
	c.mu.Unlock()
	return false, err
}

// deliveredLocked accounts for a message returned by Recv and decides
// whether to acknowledge now; it unlocks mu.
func (c *channel) deliveredLocked(n int) {
	c.received++
	c.pendMsgs++
	c.pendBytes += n
	level := c.ackLevelLocked()
	urgent := level > c.ackSent &&
		((c.ackWant != 0 && level >= c.ackWant) || c.pendMsgs >= max(1, c.winMsgs/8) || c.pendBytes >= c.winBytes/8)
	if !urgent {
		if level > c.ackSent {
			c.armIdleLocked(c.o.idle) // a delayed acknowledgement, unless a frame carries it first
		}
		c.mu.Unlock()
		return
	}
	c.ackUrgent = true
	c.mu.Unlock()
	if c.wsem.TryAcquire() {
		c.mu.Lock()
		owe := c.ackUrgent && c.ackLevelLocked() > c.ackSent && c.sendErrLocked() == nil
		var f frame
		if owe {
			f = frame{typ: frameAck, ack: c.takeAckLocked()}
		}
		c.mu.Unlock()
		if owe {
			if err := c.writeRaw(&f, nil, nil); err != nil {
				_ = c.ioFailed(fmt.Errorf("write: %w", err))
			}
		}
		c.wsem.Release()
		return
	}
	// A writer holds the socket and flushes the acknowledgement after its
	// frame; the idle timer covers the case where it just finished.
	c.mu.Lock()
	c.armIdleLocked(c.o.idle)
	c.mu.Unlock()
}

// progress waits until cond (called with mu held) holds, reading the
// socket itself when nobody else does.
func (c *channel) progress(ctx context.Context, cond func() bool) error {
	c.mu.Lock()
	for {
		if cond() {
			c.mu.Unlock()
			return nil
		}
		if err := c.sendErrLocked(); err != nil {
			c.mu.Unlock()
			return err
		}
		if !c.token {
			c.takeTokenLocked(false)
			c.watchLocked(ctx)
			c.mu.Unlock()
			_, err := c.pump(ctx, nil, false, cond)
			c.mu.Lock()
			c.releaseTokenLocked(false)
			if err != nil {
				c.mu.Unlock()
				return err
			}
			continue
		}
		wait := c.notify.Wait()
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
}

// takeTokenLocked makes the caller the socket's reader.
func (c *channel) takeTokenLocked(bg bool) {
	c.token = true
	c.bgHolds = bg
	c.preempt = false
	if c.deadlineArmed {
		c.deadlineArmed = false
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}

// releaseTokenLocked gives the socket up and wakes whoever waits for it.
func (c *channel) releaseTokenLocked(bg bool) {
	c.token = false
	c.holdDone = nil
	c.bgHolds = false
	c.preempt = false
	c.notify.Broadcast()
	if !bg {
		c.armIdleLocked(c.o.idle)
	}
}

// interruptLocked cuts the current holder's blocked read short.
func (c *channel) interruptLocked() {
	if !c.deadlineArmed {
		c.deadlineArmed = true
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
	}
}

// watchLocked has the end of ctx interrupt the token holder that just took
// the token with it. The channel keeps one registration (core.Watch) for the
// Done channel of the context used last, so that a Recv with the same
// context as the one before allocates nothing. mu is held.
func (c *channel) watchLocked(ctx context.Context) {
	c.holdDone = ctx.Done()
	if c.watch.Arm(ctx, c.onContextEnd) {
		c.interruptLocked()
	}
}

// interruptIfContextEnded interrupts the token holder if its context ended.
func (c *channel) interruptIfContextEnded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.token || c.holdDone == nil {
		return
	}
	select {
	case <-c.holdDone:
		c.interruptLocked()
	default:
	}
}

// pump reads frames as the token holder. It returns true when it filled m
// (a Recv's message), or when until (called with mu held) holds; it returns
// an error when ctx ended, the holder was preempted, or the channel ended.
func (c *channel) pump(ctx context.Context, m *rdma.Message, bg bool, until func() bool) (bool, error) {
	for {
		delivered, err := c.step(m)
		if delivered {
			return true, nil
		}
		if err == nil {
			if until != nil || bg {
				c.mu.Lock()
				done := until != nil && until()
				leave := bg && c.preempt
				c.mu.Unlock()
				if done {
					return false, nil
				}
				if leave {
					return false, errPreempted
				}
			}
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return false, c.readFailed(err)
		}
		// An interruption: find out whose.
		c.mu.Lock()
		switch {
		case c.localClosed:
			c.mu.Unlock()
			return false, fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrClosed)
		case ctx.Err() != nil:
			c.parkDirectLocked()
			c.mu.Unlock()
			return false, ctx.Err()
		case bg && c.preempt:
			c.mu.Unlock()
			return false, errPreempted
		case c.life.Ended():
			c.mu.Unlock()
			return false, c.life.Err()
		default: // meant for an earlier holder
			c.deadlineArmed = false
			_ = c.nc.SetReadDeadline(time.Time{})
			c.mu.Unlock()
		}
	}
}

// parkDirectLocked moves a payload being read into a leaving Recv's
// message to a buffer of the channel, for the next holder to complete.
func (c *channel) parkDirectLocked() {
	rx := &c.rx
	if !rx.active || rx.direct == nil {
		return
	}
	buf := c.getBufLocked(len(rx.dst))
	copy(buf, rx.dst[:rx.got])
	rx.dst = buf
	rx.direct = nil
}

// fill makes at least n bytes (n ≤ len(rbuf)) available in rbuf.
func (c *channel) fill(n int) error {
	if c.rend-c.rpos >= n {
		return nil
	}
	if c.rpos > 0 {
		c.rend = copy(c.rbuf, c.rbuf[c.rpos:c.rend])
		c.rpos = 0
	}
	for c.rend < n {
		k, err := c.nc.Read(c.rbuf[c.rend:])
		c.rend += k
		if err != nil && c.rend < n {
			return err
		}
	}
	return nil
}

// readInto fills dst from the read buffer, then from the socket: small
// remainders through the read buffer (which may also pick up the frames
// that follow), large ones straight into dst. It returns how many bytes it
// placed.
func (c *channel) readInto(dst []byte) (int, error) {
	n := copy(dst, c.rbuf[c.rpos:c.rend])
	c.rpos += n
	for n < len(dst) {
		if len(dst)-n < len(c.rbuf)/2 {
			if err := c.fill(1); err != nil {
				return n, err
			}
			k := copy(dst[n:], c.rbuf[c.rpos:c.rend])
			c.rpos += k
			n += k
			continue
		}
		k, err := c.nc.Read(dst[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// discard reads and drops n bytes.
func (c *channel) discard(n int) (int, error) {
	done := 0
	for done < n {
		if err := c.fill(1); err != nil {
			return done, err
		}
		k := min(n-done, c.rend-c.rpos)
		c.rpos += k
		done += k
	}
	return done, nil
}

// step reads (the rest of) one frame and applies it. It returns true when
// the frame was a message read into m.
func (c *channel) step(m *rdma.Message) (bool, error) {
	rx := &c.rx
	if !rx.active {
		if err := c.fill(headerSize); err != nil {
			return false, err
		}
		f, err := decodeFrame(c.rbuf[c.rpos : c.rpos+headerSize])
		if err != nil {
			return false, err
		}
		c.rpos += headerSize
		body, err := c.admit(&f)
		if err != nil || !body {
			return false, err
		}
		*rx = rxFrame{f: f, active: true}
		if f.typ == frameWrite {
			c.mu.Lock()
			if r, ok := c.local[f.key]; ok {
				rx.dst = r.mem[f.off : f.off+uint64(f.length)]
			} else {
				rx.discard = true
			}
			c.mu.Unlock()
			rx.chosen = true
		}
	}
	f := &rx.f
	if rx.hdrGot < int(f.hdrLen) {
		n, err := c.readInto(rx.hdr[rx.hdrGot:f.hdrLen])
		rx.hdrGot += n
		if err != nil {
			return false, err
		}
	}
	if !rx.chosen {
		rx.chosen = true
		if m != nil {
			rx.direct = m
			rx.dst = m.Prepare(f.seq, f.flags, rx.hdr[:f.hdrLen], int(f.length))
		} else {
			c.mu.Lock()
			rx.dst = c.getBufLocked(int(f.length))
			c.mu.Unlock()
		}
	}
	if rx.discard {
		n, err := c.discard(int(f.length) - rx.got)
		rx.got += n
		if err != nil {
			return false, err
		}
	} else if rx.got < len(rx.dst) {
		n, err := c.readInto(rx.dst[rx.got:])
		rx.got += n
		if err != nil {
			return false, err
		}
	}
	rx.active = false
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastDone = f.seq
	if f.typ == frameWrite {
		c.notify.Broadcast()
		return false, nil
	}
	if rx.direct != nil && rx.direct == m {
		rx.direct, rx.dst = nil, nil
		return true, nil
	}
	// Queue the message for a later Recv.
	q := &c.queue[(c.qhead+c.qlen)%len(c.queue)]
	q.seq, q.flags, q.hdrLen = f.seq, f.flags, f.hdrLen
	copy(q.hdr[:], rx.hdr[:f.hdrLen])
	q.buf = rx.dst
	rx.dst = nil
	c.qlen++
	c.qbytes += len(q.buf)
	c.notify.Broadcast()
	return false, nil
}

// admit checks a frame header against the channel's state and applies the
// frames that have no body. It reports whether a body follows.
func (c *channel) admit(f *frame) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.ack < c.peerAck || f.ack > c.lastSeq {
		return false, fmt.Errorf("%w: acknowledgement %d outside [%d, %d]", rdma.ErrProtocol, f.ack, c.peerAck, c.lastSeq)
	}
	if f.ack > c.peerAck {
		c.peerAck = f.ack
		c.retained.AckUpTo(f.ack)
		c.ackedPub.Store(f.ack)
		c.notify.Broadcast()
	}
	switch f.typ {
	case frameData:
		if f.seq != c.lastRx+1 {
			return false, fmt.Errorf("%w: message sequence number %d after %d", rdma.ErrProtocol, f.seq, c.lastRx)
		}
		if c.qlen >= c.winMsgs || (c.qlen > 0 && c.qbytes+int(f.length) > c.winBytes) {
			return false, fmt.Errorf("%w: message beyond the window (%d messages, %d bytes queued)", rdma.ErrProtocol, c.qlen, c.qbytes)
		}
		c.lastRx = f.seq
		return true, nil
	case frameWrite:
		if f.seq != c.lastRx+1 {
			return false, fmt.Errorf("%w: write sequence number %d after %d", rdma.ErrProtocol, f.seq, c.lastRx)
		}
		r, ok := c.local[f.key]
		if !ok && (f.key == 0 || f.key > c.nextKey) {
			return false, fmt.Errorf("%w: write into unknown region %d", rdma.ErrProtocol, f.key)
		}
		if ok {
			size := uint64(len(r.mem))
			if f.off > size || uint64(f.length) > size-f.off {
				return false, fmt.Errorf("%w: write of %d bytes at %d outside region %d of %d bytes", rdma.ErrProtocol, f.length, f.off, f.key, size)
			}
		}
		c.lastRx = f.seq
		return true, nil
	case frameAckReq:
		if f.seq > c.lastRx {
			return false, fmt.Errorf("%w: acknowledgement requested for %d, received up to %d", rdma.ErrProtocol, f.seq, c.lastRx)
		}
		if f.seq > c.ackWant {
			c.ackWant = f.seq
		}
		if c.ackLevelLocked() >= f.seq && f.seq > c.ackSent {
			c.ackUrgent = true
			c.armIdleLocked(0) // answer from the idle goroutine: this holder may be a Recv
		}
	case frameRegionAdd:
		if _, dup := c.remote[f.key]; dup || len(c.remote) >= maxRegions {
			return false, fmt.Errorf("%w: region %d added twice or too many regions", rdma.ErrProtocol, f.key)
		}
		c.remote[f.key] = f.off
	case frameRegionDel:
		if _, ok := c.remote[f.key]; !ok {
			return false, fmt.Errorf("%w: unknown region %d deleted", rdma.ErrProtocol, f.key)
		}
		delete(c.remote, f.key)
	case frameClose:
		return false, errCloseFrame
	}
	return false, nil
}

// getBufLocked returns a buffer of n bytes for a queued message.
func (c *channel) getBufLocked(n int) []byte {
	for i := len(c.free) - 1; i >= 0; i-- {
		if b := c.free[i]; cap(b) >= n {
			c.free[i] = c.free[len(c.free)-1]
			c.free[len(c.free)-1] = nil
			c.free = c.free[:len(c.free)-1]
			return b[:n]
		}
	}
	return make([]byte, n)
}

// putBufLocked keeps b for reuse while the spare buffers stay within the
// receive window.
func (c *channel) putBufLocked(b []byte) {
	if cap(b) == 0 || len(c.free) >= maxFreeBuffers {
		return
	}
	spare := cap(b)
	for _, f := range c.free {
		spare += cap(f)
	}
	if spare <= c.winBytes {
		c.free = append(c.free, b)
	}
}

// ---- ending ----

// readFailed ends the channel after a read error and returns the error for
// the holder's caller.
func (c *channel) readFailed(err error) error {
	switch {
	case errors.Is(err, errCloseFrame):
		c.mu.Lock()
		local := c.localClosed
		c.mu.Unlock()
		if local {
			return fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrClosed)
		}
		if c.end(fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrPeerClosed)) {
			// Answer the peer's close with ours, so that it may close without
			// losing what it still had to read.
			if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}
		return c.life.Err()
	case errors.Is(err, rdma.ErrProtocol):
		c.violated(err)
		return c.life.Err()
	default:
		return c.ioFailed(err)
	}
}

// ioFailed ends the channel after a transport error.
func (c *channel) ioFailed(err error) error {
	c.mu.Lock()
	local := c.localClosed
	c.mu.Unlock()
	if local {
		return fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrClosed)
	}
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("connection closed without a close frame: %w", err)
	}
	c.end(fmt.Errorf("tcp %q: %w: %w", c.connID, rdma.ErrPeerLost, err))
	return c.life.Err()
}

// violated disconnects a peer that broke the protocol and drops what it
// sent that was still waiting for Recv.
func (c *channel) violated(err error) {
	err = fmt.Errorf("tcp %q: %w", c.connID, err)
	c.mu.Lock()
	if c.violation != nil || c.life.Ended() {
		c.mu.Unlock()
		return
	}
	c.violation = err
	for c.qlen > 0 {
		c.queue[c.qhead].buf = nil
		c.qhead = (c.qhead + 1) % len(c.queue)
		c.qlen--
	}
	c.qbytes = 0
	c.mu.Unlock()
	// Counted and logged before the end is visible, so that whoever sees the
	// end also sees the count.
	c.log.WithError(err).Warn(core.LogProtocolViolation)
	if c.onProtocolError != nil {
		c.onProtocolError()
	}
	c.end(err)
	_ = c.nc.Close()
}

// end ends the channel's life with err and wakes everyone; it reports
// whether this call ended it.
func (c *channel) end(err error) bool {
	if !c.life.End(err) {
		return false
	}
	c.mu.Lock()
	c.notify.Broadcast()
	c.mu.Unlock()
	return true
}

func (c *channel) Close() error {
	c.mu.Lock()
	if c.localClosed {
		c.mu.Unlock()
		<-c.closed
		return nil
	}
	c.localClosed = true
	c.stopped = true
	c.watch.Stop()
	alive := c.life.End(fmt.Errorf("tcp %q: %w", c.connID, rdma.ErrClosed))
	c.interruptLocked()
	c.notify.Broadcast()
	c.mu.Unlock()
	// Bound every write from now on: a writer stuck on a peer that does not
	// read gives the socket up, and so does our close frame.
	deadline := time.Now().Add(c.o.closeTimeout)
	_ = c.nc.SetWriteDeadline(deadline)
	c.timer.Stop()
	c.idleWG.Wait()
	<-c.bgDone
	if alive {
		c.closeGracefully(deadline)
	}
	_ = c.nc.Close()
	c.mu.Lock()
	for c.qlen > 0 {
		c.queue[c.qhead].buf = nil
		c.qhead = (c.qhead + 1) % len(c.queue)
		c.qlen--
	}
	c.qbytes = 0
	c.local = map[rdma.RegionKey]*region{}
	c.mu.Unlock()
	c.cancel()
	close(c.closed)
	return nil
}

// closeGracefully sends the close frame, then reads until the peer
// answers with its end of stream (or closeTimeout passes), so that closing
// the socket does not reset the connection before the peer read the frame.
func (c *channel) closeGracefully(deadline time.Time) {
	if c.wsem.Acquire(c.ctx, nil, nil) != nil {
		return
	}
	c.mu.Lock()
	f := frame{typ: frameClose, ack: c.takeAckLocked()}
	c.mu.Unlock()
	err := c.writeRaw(&f, nil, nil)
	c.wsem.Release()
	if err != nil {
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	// Wait for the other holders to leave (they were interrupted), then drain.
	c.mu.Lock()
	for c.token {
		wait := c.notify.Wait()
		c.mu.Unlock()
		<-wait
		c.mu.Lock()
	}
	c.token = true
	c.deadlineArmed = false
	c.mu.Unlock()
	_ = c.nc.SetReadDeadline(deadline)
	for {
		if _, err := c.nc.Read(c.rbuf); err != nil {
			return
		}
	}
}

// ---- the background reader ----

// onIdle runs when the channel was idle for o.idle: it sends a delayed
// acknowledgement and lets the background goroutine read.
func (c *channel) onIdle() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.idleWG.Add(1)
	free := !c.token
	c.mu.Unlock()
	defer c.idleWG.Done()
	c.flushAck()
	if free {
		select {
		case c.bgWake <- struct{}{}:
		default:
		}
	}
}

// background reads the socket while the application does not, so that
// acknowledgements, writes and the peer's close are processed.
func (c *channel) background() {
	defer close(c.bgDone)
	for {
		select {
		case <-c.bgWake:
		case <-c.life.Done():
			return
		}
		c.mu.Lock()
		if c.token || c.localClosed || c.life.Ended() {
			c.mu.Unlock()
			continue
		}
		c.takeTokenLocked(true)
		c.mu.Unlock()
		_, _ = c.pump(c.ctx, nil, true, nil)
		c.mu.Lock()
		c.releaseTokenLocked(true)
		c.mu.Unlock()
	}
}
