package call

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// ErrClosed is returned by a Caller's calls after Close.
var ErrClosed = errors.New("call: caller closed")

// maxSpare bounds how many finished pendings a Caller keeps for reuse, and
// maxSpareBuf the request buffer a kept pending keeps.
const (
	maxSpare    = 16
	maxSpareBuf = 64 << 10
)

// copyUnlocked is the payload size from which Call copies a payload with
// c.mu released.
const copyUnlocked = 4 << 10

// pending is a call waiting for its answer. Call fills header and payload
// before it registers the call and nothing writes them afterwards
// (sendAgain reads them while the call may be sending them too); out, seq
// and dst are the calling goroutine's own. The other fields are guarded by
// Caller.mu.
type pending struct {
	id uint64 // the correlation ID
	// header and payload are the message (the payload a copy), both in
	// buf, kept for sending again.
	header, payload []byte
	buf             []byte // the request buffer, kept with the pending when no channel refers to it
	// out is what the calling goroutine hands to Send, which writes into
	// it; being a field, it does not make every send allocate. seq is the
	// sequence number of that send.
	out rdma.Message
	seq uint64
	// dst is where the answer is appended (AppendCall's buffer).
	dst []byte
	// sentOn is the channel that carries the call; nil when the next
	// channel must take it.
	sentOn   rdma.Channel
	tried    bool // it was handed to a channel once
	answered bool
	reply    []byte
	err      error
	// pinned is set when a channel other than sentOn, or a goroutine other
	// than the call's, may still refer to the pending or its buffer: when
	// the call was sent more than once, or Bind moved it to a new channel.
	// A pinned pending is left to the garbage collector.
	pinned bool
	// wake takes a token (it has room for one) when the answer arrives or
	// when the call, following, should look whether it can read; the call
	// then looks at the state again, so a token it does not need only
	// costs a look. signalled says a token may be left there.
	wake      chan struct{}
	signalled bool
	// following is set while the call waits in Caller.followers, linked
	// by prev and next.
	following  bool
	prev, next *pending
}

// reset makes a finished p ready for the next call, keeping buf and the
// wake channel, and letting go of the application's buffers. The fields
// not cleared here are written by every call before they are read (id,
// seq) or left as they must be by finish (pinned, following, prev, next).
func (p *pending) reset(buf []byte) {
	p.buf = buf
	p.header, p.payload, p.dst = nil, nil, nil
	p.out.Header, p.out.Payload = nil, nil
	p.sentOn = nil
	p.tried, p.answered, p.signalled = false, false, false
	p.reply, p.err = nil, nil
}

// signal gives p a token on wake, unless one waits there already.
func (p *pending) signal() {
	p.signalled = true
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// calls holds the pending calls by ID: in a small table indexed by the ID,
// where each of a run of calls finds a place while the calls before it
// finish, and in a map for the others. A plain map costs more than the rest
// of a call's bookkeeping (it draws a new hash seed whenever it empties).
type calls struct {
	slots [16]*pending
	more  map[uint64]*pending // made when first needed
	n     int
}

func (t *calls) slot(id uint64) **pending { return &t.slots[id%uint64(len(t.slots))] }

func (t *calls) add(p *pending) {
	if s := t.slot(p.id); *s == nil {
		*s = p
	} else {
		if t.more == nil {
			t.more = map[uint64]*pending{}
		}
		t.more[p.id] = p
	}
	t.n++
}

// get returns the call with the ID, or nil.
func (t *calls) get(id uint64) *pending {
	if p := *t.slot(id); p != nil && p.id == id {
		return p
	}
	return t.more[id]
}

func (t *calls) remove(p *pending) {
	if s := t.slot(p.id); *s == p {
		*s = nil
	} else {
		delete(t.more, p.id)
	}
	t.n--
}

// each calls f for every call.
func (t *calls) each(f func(p *pending)) {
	for _, p := range t.slots {
		if p != nil {
			f(p)
		}
	}
	for _, p := range t.more {
		f(p)
	}
}

// followers is the list of calls that wait for the reader to stop, oldest
// first, linked through their pendings so that a call joins and leaves it
// without allocating.
type followers struct {
	head, tail *pending
}

func (l *followers) push(p *pending) {
	p.following, p.prev, p.next = true, l.tail, nil
	if l.tail != nil {
		l.tail.next = p
	} else {
		l.head = p
	}
	l.tail = p
}

func (l *followers) remove(p *pending) {
	if !p.following {
		return
	}
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		l.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		l.tail = p.prev
	}
	p.following, p.prev, p.next = false, nil, nil
}

// Caller makes calls and sends one-way messages over a connection's current
// channel. Bind gives it the channel, and every later one when the
// connection heals; calls wait across a change of channel.
//
// There is no reader goroutine: a waiting call reads the channel itself and
// hands the answers of other calls to them (leader and followers), so that
// a lone call costs one send and one receive on its own goroutine, as a bare
// round trip does. When its own answer is there, the reader wakes the
// oldest follower to read in turn.
//
// A call that starts while no other call is pending runs alone (see
// AppendCall): it takes the caller with one compare-and-swap on state and gives
// it back with another, without c.mu and without entering the table of
// pending calls. Whoever comes meanwhile (another call, Bind, Close) marks
// state, so that the lone call's last compare-and-swap fails and it
// finishes under c.mu; if it must wait on (its channel changed or ended,
// its context ended), it joins the table as any call (adopt).
type Caller struct {
	log     *logrus.Entry
	explain func(error) error // WithExplain's, or nil

	// state holds the bits below. A lone call starts only from 0.
	state atomic.Uint32
	cur   atomic.Pointer[bound] // ch, for the lone call to read

	mu      sync.Mutex
	ch      rdma.Channel
	changed chan struct{} // closed when ch changes or the caller closes
	closed  bool
	nextID  uint64 // how many calls started in the table (their IDs are odd)
	pending calls
	// rebinds are the Binds that ran while a lone call ran, oldest first.
	rebinds   []rebind
	followers followers  // calls waiting for the reader to stop
	spare     []*pending // finished calls' pendings, for the next calls

	// The lone call's own: the last ID it used (even IDs), what it hands
	// to Send, and the request buffers of the last lone calls.
	loneID   uint64
	loneOut  rdma.Message
	loneBufs loneBufs

	in     rdma.Message       // the reader's buffer
	resend sync.WaitGroup     // goroutines sending calls again after a Bind
	ctx    context.Context    // of those goroutines, ended by Close
	cancel context.CancelFunc //
}

// The bits of Caller.state.
const (
	// stateLone: a lone call runs. It reads the channel and is not in the
	// table. Set only from 0, cleared by the lone call.
	stateLone uint32 = 1 << iota
	// stateReading: a call of the table reads the channel. Set by it with
	// c.mu held or just after its send (claimReading), cleared with c.mu
	// held.
	stateReading
	// stateBusy: calls are pending in the table, there is no channel, or
	// the caller is closed: no lone call starts. Kept with c.mu held
	// (settleLocked).
	stateBusy
	// stateRebound: a Bind ran while the lone call ran.
	stateRebound
)

// loneBufs are the request buffers of the last lone calls, taken in turn.
// A channel refers to what it sent until it acknowledged it (its Unacked
// copies what it returns, taken atomically with Acked), so a buffer is
// reused only once acknowledged. With the buffers taken in turn, one
// Acked covers the next ones too (on shm, the answer carries the peer's
// consumer position): the channel is asked once per round of them. That
// look lies on the way from an answer to the next call (and on shm it
// takes a lock), so the rounds are long for small calls: sixteen buffers
// of at most smallLoneBuf bytes; larger ones, up to maxSpareBuf, go round
// four places. So the buffers kept stay under 448 KiB.
type loneBufs struct {
	b     *bound // whose channel carried the buffers kept
	acked uint64 // what its Acked returned last
	buf   [16][]byte
	seq   [16]uint64
	next  int
}

// smallLoneBuf is the largest buffer that goes round all of loneBufs'
// places; largeLonePlaces are the places larger ones go round.
const (
	smallLoneBuf    = 16 << 10
	largeLonePlaces = 4
)

// take returns the next buffer, of length n: the kept one if it is large
// enough (but not a large one for a small call) and acknowledged by b's
// channel, else a new one. The channel is asked only when what it said
// last does not cover the buffer.
func (l *loneBufs) take(b *bound, n int) []byte {
	buf, seq := l.buf[l.next], l.seq[l.next]
	l.buf[l.next] = nil
	if cap(buf) < n || b != l.b || (n <= smallLoneBuf && cap(buf) > smallLoneBuf) {
		return make([]byte, n)
	}
	if seq > l.acked {
		if l.acked = b.ch.Acked(); seq > l.acked {
			return make([]byte, n)
		}
	}
	return buf[:n]
}

// keep keeps buf, which b's channel carried as message seq, for the lone
// call a round later.
func (l *loneBufs) keep(b *bound, buf []byte, seq uint64) {
	if b != l.b {
		clear(l.buf[:])
		l.b, l.acked = b, 0
	}
	places := len(l.buf)
	if cap(buf) > smallLoneBuf {
		places = largeLonePlaces
	}
	if l.next >= places { // the first large call after small ones
		l.next = 0
		clear(l.buf[places:])
	}
	if cap(buf) <= maxSpareBuf {
		l.buf[l.next], l.seq[l.next] = buf, seq
	}
	if l.next++; l.next == places {
		l.next = 0
	}
}

// bound holds a channel for Caller.cur.
type bound struct{ ch rdma.Channel }

// rebind is a Bind that ran while the lone call ran: calls that old
// carried and whose IDs are in replayed were sent again on ch.
type rebind struct {
	old, ch  rdma.Channel
	replayed map[uint64]bool
}

// Option configures a Caller.
type Option func(*Caller)

// WithExplain has every error a call returns passed through f first, so
// that what owns the caller can say why a call failed: a connection that
// was down while the call's context ran out, say. f returns the error to
// give the application (err itself when it has nothing to add).
func WithExplain(f func(err error) error) Option {
	return func(c *Caller) { c.explain = f }
}

// NewCaller returns a caller without a channel yet.
func NewCaller(log *logrus.Entry, opts ...Option) *Caller {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Caller{log: log, changed: make(chan struct{}), ctx: ctx, cancel: cancel}
	for _, o := range opts {
		o(c)
	}
	c.state.Store(stateBusy) // no channel yet
	return c
}

// settleLocked sets or clears stateBusy after what c.mu guards changed.
func (c *Caller) settleLocked() {
	if c.pending.n == 0 && c.ch != nil && !c.closed {
		c.state.And(^stateBusy)
	} else {
		c.state.Or(stateBusy)
	}
}

// reading reports whether a call reads the channel.
func (c *Caller) reading() bool { return c.state.Load()&(stateLone|stateReading) != 0 }

// claimReading takes the reader's place if nobody reads.
func (c *Caller) claimReading() bool {
	for {
		s := c.state.Load()
		if s&(stateLone|stateReading) != 0 {
			return false
		}
		if c.state.CompareAndSwap(s, s|stateReading) {
			return true
		}
	}
}

// Bind makes ch the caller's channel; old, if any, is the channel it
// replaces, and replayed are old's unacknowledged messages, which were
// already sent again on ch (see rdma.BindFunc). Calls that old carried and
// that are not among those are sent again on ch, marked as retries; calls
// never sent go out with their caller. Bind does not block.
func (c *Caller) Bind(ch, old rdma.Channel, replayed []rdma.Message) {
	ids := make(map[uint64]bool, len(replayed))
	for _, m := range replayed {
		if kind, id, _, err := decode(m.Header); err == nil && kind == KindCall {
			ids[id] = true
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	// Busy first: no lone call starts on the old channel from here on; one
	// that runs learns of the change when it finishes (adopt).
	if c.state.Or(stateBusy)&stateLone != 0 {
		c.rebinds = append(c.rebinds, rebind{old: old, ch: ch, replayed: ids})
		c.state.Or(stateRebound)
	}
	var resend []*pending
	c.pending.each(func(p *pending) {
		switch {
		case p.answered:
		case old != nil && p.sentOn == old && ids[p.id]:
			p.sentOn, p.pinned = ch, true
		case p.sentOn != nil: // sent, never answered: again, as a retry
			p.sentOn, p.pinned = ch, true
			resend = append(resend, p)
		}
	})
	c.ch = ch
	c.cur.Store(&bound{ch})
	close(c.changed)
	c.changed = make(chan struct{})
	if len(resend) > 0 {
		c.resend.Add(1)
	}
	c.settleLocked()
	c.mu.Unlock()
	if len(resend) > 0 {
		go c.sendAgain(ch, resend)
	}
}

func (c *Caller) sendAgain(ch rdma.Channel, calls []*pending) {
	defer c.resend.Done()
	for _, p := range calls {
		m := rdma.Message{Header: p.header, Payload: p.payload, Flags: rdma.FlagRetry}
		if _, err := ch.Send(c.ctx, &m); err != nil {
			c.unsent(p, ch)
		}
	}
}

// unsent records that p did not go out on ch: the next channel takes it.
func (c *Caller) unsent(p *pending, ch rdma.Channel) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.sentOn == ch {
		p.sentOn = nil
	}
}

// Call sends payload with header and waits for the answer until ctx ends.
// It copies payload: the caller may reuse it once Call returns. The answer
// is a new slice; AppendCall puts it in the caller's buffer instead.
func (c *Caller) Call(ctx context.Context, header, payload []byte) ([]byte, error) {
	return c.AppendCall(ctx, nil, header, payload)
}

// AppendCall is Call appending the answer to dst; it returns the extended
// buffer, or dst and the error. With a dst of enough capacity, a call
// allocates nothing.
//
// A call that starts while no other call is pending runs alone: it sends
// and reads on its own, the channel's only reader, taking c.mu only to hand
// another call its answer and when state says that someone came meanwhile.
// Its code is here rather than in a function of its own: a goroutine that
// resumes after waiting for the answer pays for each function it returns
// through (the processor mispredicts those returns), so a lone call returns
// from Recv into AppendCall and from there into the application.
func (c *Caller) AppendCall(ctx context.Context, dst, header, payload []byte) ([]byte, error) {
	if len(header) > MaxHeaderSize || !c.state.CompareAndSwap(0, stateLone) {
		return c.tableCall(ctx, dst, header, payload)
	}
	// What a call of the table keeps in its pending, a lone call keeps in
	// locals; it makes a pending only if it joins the table (adopt).
	b := c.cur.Load()
	ch := b.ch
	n := prefixSize + len(header)
	buf := c.loneBufs.take(b, n+len(payload))
	copy(buf[n:], payload)
	c.loneID += 2
	id, out := c.loneID, &c.loneOut
	out.Header, out.Payload, out.Flags = encode(buf[:n], KindCall, id, header), buf[n:], 0
	seq, err := ch.Send(ctx, out)
	if err != nil {
		// As any call whose send failed: it goes out again, as a retry,
		// on the current channel, and if that fails too, on the next.
		c.mu.Lock()
		return c.adoptAndWait(ctx, lonePending(id, buf, n, 0, nil, dst), dst)
	}
	// The answer is received straight into dst's spare room when it fits.
	c.in.Lend(dst[len(dst):cap(dst)])
	for {
		if err := ch.Recv(ctx, &c.in); err != nil {
			c.in.Lend(nil)
			c.mu.Lock() // the channel ended: wait for the next one
			return c.adoptAndWait(ctx, lonePending(id, buf, n, seq, ch, dst), dst)
		}
		kind, aid, _, err := decode(c.in.Header)
		if err != nil || (kind != KindReply && kind != KindError) {
			c.log.WithField("conn_id", ch.ConnID()).Debug("call: dropped a message that is not an answer")
			continue
		}
		if aid == id {
			c.in.Lend(nil)
			reply, err := c.answer(kind, dst)
			c.loneBufs.keep(b, buf, seq)
			if !c.state.CompareAndSwap(stateLone, 0) {
				c.leaveLone()
			}
			if err != nil {
				return dst, c.explained(err)
			}
			return reply, nil
		}
		c.mu.Lock()
		c.deliverLocked(aid, kind)
		if c.closed || c.ch != ch {
			c.in.Lend(nil)
			return c.adoptAndWait(ctx, lonePending(id, buf, n, seq, ch, dst), dst)
		}
		c.mu.Unlock()
	}
}

// lonePending returns the pending of a lone call that joins the table: its
// ID, its request buffer with the header in buf[:n], the sequence number of
// its send on sentOn (nil if the send failed), and where its answer goes.
func lonePending(id uint64, buf []byte, n int, seq uint64, sentOn rdma.Channel, dst []byte) *pending {
	return &pending{
		id: id, header: buf[:n], payload: buf[n:], buf: buf,
		seq: seq, sentOn: sentOn, tried: true, dst: dst,
		wake: make(chan struct{}, 1),
	}
}

// leaveLone ends a lone call that someone came upon: it gives the reader's
// place up under c.mu, so that a follower is woken.
func (c *Caller) leaveLone() {
	c.mu.Lock()
	c.rebinds = nil
	c.state.And(^(stateLone | stateRebound))
	c.handOffLocked()
	c.mu.Unlock()
}

// adoptAndWait makes the lone call p, not answered, a call of the table
// (adoptLocked) and waits for its answer there, unless ctx has ended. c.mu
// is held; it returns with c.mu released.
func (c *Caller) adoptAndWait(ctx context.Context, p *pending, dst []byte) ([]byte, error) {
	c.adoptLocked(p)
	var (
		reply []byte
		err   = ctx.Err()
	)
	if err != nil {
		_, err = c.finish(p, err)
	} else {
		reply, err = c.wait(ctx, p)
	}
	if err != nil {
		return dst, c.explained(err)
	}
	return reply, nil
}

// explained is err as WithExplain's function tells it.
func (c *Caller) explained(err error) error {
	if c.explain != nil {
		return c.explain(err)
	}
	return err
}

// tableCall is AppendCall for a call that does not run alone (or whose
// header is too large): it enters the table of pending calls.
func (c *Caller) tableCall(ctx context.Context, dst, header, payload []byte) ([]byte, error) {
	if err := checkHeader(header); err != nil {
		return dst, err
	}
	// One buffer holds the header and the copy of the payload. A channel
	// may refer to it until it acknowledges the call: the pending keeps it
	// for the next call only if it has (see finish).
	n := prefixSize + len(header)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return dst, ErrClosed
	}
	p := c.newPendingLocked()
	if cap(p.buf) < n+len(payload) {
		p.buf = make([]byte, n+len(payload))
	}
	buf := p.buf[:n+len(payload)]
	if len(payload) < copyUnlocked {
		copy(buf[n:], payload)
	} else {
		c.mu.Unlock()
		copy(buf[n:], payload)
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return dst, ErrClosed
		}
	}
	c.nextID++
	p.id, p.dst = 2*c.nextID+1, dst // odd: lone calls take the even IDs
	p.header = encode(buf[:n], KindCall, p.id, header)
	p.payload = buf[n:]
	c.pending.add(p)
	c.settleLocked()
	reply, err := c.wait(ctx, p)
	if err != nil {
		return dst, c.explained(err)
	}
	return reply, nil
}

// adoptLocked makes the lone call p a call of the table, not answered yet,
// and gives up the reader's place: it goes on waiting as any call does.
// What Bind does for the calls of the table it does here for p, for the
// Binds that ran meanwhile: a call sent on a channel a Bind replaced, and
// not carried by the replay, is sent again on the current channel, marked
// as a retry, whether or not its caller still waits. c.mu is held.
func (c *Caller) adoptLocked(p *pending) {
	on, again := p.sentOn, false
	for _, rb := range c.rebinds {
		if on != nil && on == rb.old {
			again = again || !rb.replayed[p.id]
			on, p.pinned = rb.ch, true
		}
	}
	switch {
	case on != c.ch || c.closed:
		// Not sent, or its channel ended without a Bind: the call sends
		// it again if it waits for the next channel.
		p.sentOn = nil
	case again:
		p.sentOn = on
		c.resend.Add(1)
		go c.sendAgain(on, []*pending{p})
	default:
		p.sentOn = on
	}
	c.rebinds = nil
	c.pending.add(p)
	c.state.And(^(stateLone | stateRebound))
	c.settleLocked()
}

// newPendingLocked returns a spare pending or a new one. c.mu is held.
func (c *Caller) newPendingLocked() *pending {
	if k := len(c.spare); k > 0 {
		p := c.spare[k-1]
		c.spare[k-1] = nil
		c.spare = c.spare[:k-1]
		return p
	}
	return &pending{wake: make(chan struct{}, 1)}
}

// wait sends p when it has not gone out on the current channel, and waits
// for its answer: reading the channel itself when nobody else does. It is
// called with c.mu held and holds it at the top of each round; it returns
// with c.mu released.
//
// A call that was woken to read but does something else first (sends, or
// waits for a channel) wakes the next follower instead (handOffLocked), so
// that answers are read while it blocks.
//
// A call that has just sent takes the reader's place without c.mu when it
// is free, and then reads at once unless its wake channel holds a token: a
// call answered by another reader has one, since the answer's reader gives
// it one (signal) and nobody else takes it. Followers decide, and readers
// give up their place, with c.mu held, so that a follower is woken by the
// reader it saw.
func (c *Caller) wait(ctx context.Context, p *pending) ([]byte, error) {
	for {
		switch {
		case p.answered:
			return c.finish(p, nil)
		case c.closed:
			return c.finish(p, ErrClosed)
		}
		ch, changed := c.ch, c.changed
		switch {
		case ch == nil: // wait for a channel
			if err := c.await(ctx, p, changed); err != nil {
				return c.finish(p, err)
			}

		case p.sentOn == nil:
			p.out.Header, p.out.Payload, p.out.Flags = p.header, p.payload, 0
			if p.tried { // it may have gone out before: a retry
				p.out.Flags = rdma.FlagRetry
				p.pinned = true
			}
			p.sentOn, p.tried = ch, true
			c.handOffLocked()
			c.mu.Unlock()
			seq, err := ch.Send(ctx, &p.out)
			p.seq = seq
			if err == nil && c.claimReading() {
				select {
				case <-p.wake: // perhaps answered: look under c.mu
					c.mu.Lock()
					c.stopReadingLocked()
				default:
					if err := c.readOrAwait(ctx, ch, p, changed); err != nil {
						return c.finish(p, err)
					}
				}
				continue
			}
			c.mu.Lock()
			if err == nil {
				continue
			}
			if p.sentOn == ch {
				p.sentOn = nil
			}
			if ctx.Err() != nil {
				return c.finish(p, ctx.Err())
			}
			// The channel ended: the call waits for the next one.
			c.log.WithError(err).WithField("conn_id", ch.ConnID()).Debug("call: send failed; waiting for the next channel")
			if err := c.await(ctx, p, changed); err != nil {
				return c.finish(p, err)
			}

		case c.claimReading():
			c.mu.Unlock()
			if err := c.readOrAwait(ctx, ch, p, changed); err != nil {
				return c.finish(p, err)
			}

		default:
			// Somebody else reads: wait for the answer, the reader to stop,
			// a new channel, or the end of ctx.
			c.followers.push(p)
			c.mu.Unlock()
			var err error
			select {
			case <-p.wake:
			case <-changed:
			case <-ctx.Done():
				err = ctx.Err()
			}
			c.mu.Lock()
			c.followers.remove(p)
			if err != nil {
				return c.finish(p, err)
			}
		}
	}
}

// readOrAwait reads ch as the reader (c.mu released, the reader's place
// taken) and returns with c.mu held. When the read fails because ctx
// ended, it returns ctx's error; when the channel ended, p waits for the
// next one (await), and only ctx's end is returned.
func (c *Caller) readOrAwait(ctx context.Context, ch rdma.Channel, p *pending, changed <-chan struct{}) error {
	if err := c.read(ctx, ch, p); err == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.await(ctx, p, changed)
}

// await releases c.mu until changed is closed, p is signalled or ctx ends,
// and takes it again; it returns ctx's error if ctx ended.
func (c *Caller) await(ctx context.Context, p *pending, changed <-chan struct{}) error {
	c.handOffLocked()
	c.mu.Unlock()
	var err error
	select {
	case <-changed:
	case <-p.wake:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	return err
}

// finish ends p's call: with its answer if err is nil, else with err. It
// forgets the call, lets the next follower read if nobody does, keeps p for
// reuse when nobody else may refer to it, and releases c.mu.
//
// p's buffer goes with it when the channel that carried it acknowledged
// it: a channel refers to what it sent only until then, and its Unacked
// copies what it returns, taken atomically with Acked.
func (c *Caller) finish(p *pending, err error) ([]byte, error) {
	var reply []byte
	if err == nil {
		reply, err = p.reply, p.err
	}
	c.pending.remove(p)
	c.settleLocked()
	c.followers.remove(p)
	c.handOffLocked()
	if !p.pinned && len(c.spare) < maxSpare {
		if p.signalled {
			select {
			case <-p.wake: // a token it did not take
			default:
			}
		}
		buf := p.buf
		if cap(buf) > maxSpareBuf || p.sentOn == nil || p.seq == 0 || p.sentOn.Acked() < p.seq {
			buf = nil
		}
		p.reset(buf)
		c.spare = append(c.spare, p)
	}
	c.mu.Unlock()
	return reply, err
}

// handOffLocked wakes the oldest follower when nobody reads, so that it
// reads in turn; if it leaves instead, it hands off again. c.mu is held.
func (c *Caller) handOffLocked() {
	if c.followers.head != nil && !c.reading() {
		c.followers.head.signal()
	}
}

// read receives messages on ch, as the reader, and delivers the answers
// among them until p's answer is there, ch is no longer the channel, the
// caller closes, or Recv fails (its error is returned). It returns with
// c.mu held and the reader's place given up.
func (c *Caller) read(ctx context.Context, ch rdma.Channel, p *pending) error {
	for {
		if err := ch.Recv(ctx, &c.in); err != nil {
			c.mu.Lock()
			c.stopReadingLocked()
			return err
		}
		kind, id, _, err := decode(c.in.Header)
		if err != nil || (kind != KindReply && kind != KindError) {
			c.log.WithField("conn_id", ch.ConnID()).Debug("call: dropped a message that is not an answer")
			continue
		}
		// The answer becomes the application's, and c.in is read into
		// again: copy it. p's own answer is copied before taking the lock:
		// p is not answered yet (the reader would have stopped) and nobody
		// but its reader answers it. Another call's dst is looked up with
		// the lock held.
		if id == p.id {
			reply, rerr := c.answer(kind, p.dst)
			c.mu.Lock()
			p.answered, p.reply, p.err = true, reply, rerr
			c.stopReadingLocked()
			return nil
		}
		c.mu.Lock()
		c.deliverLocked(id, kind)
		if p.answered || c.closed || c.ch != ch {
			c.stopReadingLocked()
			return nil
		}
		c.mu.Unlock()
	}
}

// deliverLocked hands the answer in c.in, with its ID and kind, to its
// call. An answer that finds no call is for a call sent twice, or given
// up. c.mu is held.
func (c *Caller) deliverLocked(id uint64, kind Kind) {
	q := c.pending.get(id)
	if q == nil || q.answered {
		return
	}
	q.answered = true
	q.reply, q.err = c.answer(kind, q.dst)
	q.signal()
}

// answer returns the answer in c.in, of the given kind: its payload
// appended to dst, or the handler's error.
func (c *Caller) answer(kind Kind, dst []byte) ([]byte, error) {
	if kind == KindError {
		return nil, &RemoteError{Message: string(c.in.Payload)}
	}
	if n := len(c.in.Payload); n > 0 && cap(dst)-len(dst) >= n && &dst[:len(dst)+1][len(dst)] == &c.in.Payload[0] {
		return dst[:len(dst)+n], nil // received in place (Lend)
	}
	return append(dst, c.in.Payload...), nil
}

// stopReadingLocked gives up the reader's place. c.mu is held.
func (c *Caller) stopReadingLocked() {
	c.state.And(^stateReading)
	c.handOffLocked()
}

// Send sends a one-way message: it returns once the message is handed to
// the current channel, which delivers it or, if it breaks first, has it
// sent again on the next channel. Send waits for a channel while there is
// none, until ctx ends.
func (c *Caller) Send(ctx context.Context, header, payload []byte) error {
	if err := checkHeader(header); err != nil {
		return err
	}
	m := rdma.Message{Header: encode(nil, KindSend, 0, header), Payload: payload}
	for {
		ch, changed, closed := c.current()
		if closed {
			return ErrClosed
		}
		if ch != nil {
			if _, err := ch.Send(ctx, &m); err == nil {
				return nil
			} else if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Flush waits until every message sent so far has been acknowledged by the
// member, on whichever channel carries it, or until ctx ends.
func (c *Caller) Flush(ctx context.Context) error {
	for {
		ch, changed, closed := c.current()
		if closed {
			return ErrClosed
		}
		if ch != nil {
			if err := ch.WaitAcked(ctx, ch.Stats().LastSeq); err == nil {
				return nil
			} else if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Caller) current() (rdma.Channel, <-chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch, c.changed, c.closed
}

// Pending returns how many calls wait for their answer.
func (c *Caller) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.pending.n
	if c.state.Load()&stateLone != 0 {
		n++
	}
	return n
}

// Close fails every waiting call with ErrClosed. It does not close the
// channel, which belongs to the connection: a call reading it returns when
// the channel ends (close the connection first) or its context ends.
func (c *Caller) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.changed)
	c.settleLocked()
	c.mu.Unlock()
	c.cancel()
	c.resend.Wait()
}
