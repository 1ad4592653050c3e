package call

import (
	"context"
	"errors"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// ErrClosed is returned by a Caller's calls after Close.
var ErrClosed = errors.New("call: caller closed")

// pending is a call waiting for its answer. All fields but msg and hdr are
// guarded by Caller.mu.
type pending struct {
	msg rdma.Message // header and a copy of the payload (one buffer), kept for sending again; never written after Call made it
	// sentOn is the channel that carries the call; nil when the next
	// channel must take it.
	sentOn   rdma.Channel
	tried    bool // it was handed to a channel once
	answered bool
	reply    []byte
	err      error
	// wake is made when the call waits for another goroutine to read its
	// answer, and closed when the answer is there.
	wake chan struct{}
}

// Caller makes calls and sends one-way messages over a connection's current
// channel. Bind gives it the channel, and every later one when the
// connection heals; calls wait across a change of channel.
//
// There is no reader goroutine: a waiting call reads the channel itself and
// hands the answers of other calls to them (leader and followers), so that
// a lone call costs one send and one receive on its own goroutine, as a bare
// round trip does.
type Caller struct {
	log *logrus.Entry

	mu        sync.Mutex
	ch        rdma.Channel
	changed   chan struct{} // closed when ch changes or the caller closes
	closed    bool
	nextID    uint64
	pending   map[uint64]*pending
	reading   bool          // a call reads the channel
	followers int           // calls waiting for the reader
	free      chan struct{} // closed when the reader stops reading, if followers wait

	in     rdma.Message       // the reader's buffer
	resend sync.WaitGroup     // goroutines sending calls again after a Bind
	ctx    context.Context    // of those goroutines, ended by Close
	cancel context.CancelFunc //
}

// NewCaller returns a caller without a channel yet.
func NewCaller(log *logrus.Entry) *Caller {
	ctx, cancel := context.WithCancel(context.Background())
	return &Caller{log: log, changed: make(chan struct{}), free: make(chan struct{}), pending: map[uint64]*pending{}, ctx: ctx, cancel: cancel}
}

// Bind makes ch the caller's channel; old, if any, is the channel it
// replaces, whose unacknowledged messages were already sent again on ch.
// Calls that old carried and that are not among those are sent again on ch,
// marked as retries; calls never sent go out with their caller. Bind does
// not block: it fits rdma.BindFunc.
func (c *Caller) Bind(ch, old rdma.Channel) {
	replayed := map[uint64]bool{}
	if old != nil {
		for _, m := range old.Unacked() {
			if kind, id, _, err := decode(m.Header); err == nil && kind == KindCall {
				replayed[id] = true
			}
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	var resend []*pending
	for id, p := range c.pending {
		switch {
		case p.answered:
		case old != nil && p.sentOn == old && replayed[id]:
			p.sentOn = ch
		case p.sentOn != nil: // sent, never answered: again, as a retry
			p.sentOn = ch
			resend = append(resend, p)
		}
	}
	c.ch = ch
	close(c.changed)
	c.changed = make(chan struct{})
	if len(resend) > 0 {
		c.resend.Add(1)
	}
	c.mu.Unlock()
	if len(resend) > 0 {
		go c.sendAgain(ch, resend)
	}
}

func (c *Caller) sendAgain(ch rdma.Channel, calls []*pending) {
	defer c.resend.Done()
	for _, p := range calls {
		m := p.msg // p.msg is never written after Call made it: a copy carries the mark
		m.Flags |= rdma.FlagRetry
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
// It copies payload: the caller may reuse it once Call returns.
func (c *Caller) Call(ctx context.Context, header, payload []byte) ([]byte, error) {
	if len(header) > MaxHeaderSize {
		return nil, errors.New("call: header too large")
	}
	// One buffer holds the header and the copy of the payload.
	buf := make([]byte, prefixSize+len(header)+len(payload))
	p := &pending{}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.nextID++
	id := c.nextID
	p.msg.Header, _ = encode(buf[:0:prefixSize+len(header)], KindCall, id, header)
	p.msg.Payload = buf[len(p.msg.Header):]
	copy(p.msg.Payload, payload)
	c.pending[id] = p
	c.mu.Unlock()
	reply, err := c.wait(ctx, id, p)
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
	return reply, err
}

// wait sends p when it has not gone out on the current channel, and waits
// for its answer: reading the channel itself when nobody else does.
func (c *Caller) wait(ctx context.Context, id uint64, p *pending) ([]byte, error) {
	for {
		c.mu.Lock()
		switch {
		case p.answered:
			c.mu.Unlock()
			return p.reply, p.err
		case c.closed:
			c.mu.Unlock()
			return nil, ErrClosed
		}
		ch, changed := c.ch, c.changed
		if ch != nil && p.sentOn == nil {
			m := p.msg
			if p.tried { // it may have gone out before: a retry
				m.Flags |= rdma.FlagRetry
			}
			p.sentOn, p.tried = ch, true
			c.mu.Unlock()
			if _, err := ch.Send(ctx, &m); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				// The channel ended: the call waits for the next one.
				c.log.WithError(err).WithField("conn_id", ch.ConnID()).Debug("call: send failed; waiting for the next channel")
				c.unsent(p, ch)
				select {
				case <-changed:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			continue
		}
		if ch != nil && !c.reading {
			c.reading = true
			c.mu.Unlock()
			err := c.read(ctx, ch)
			c.stopReading()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				// The channel ended: wait for the next one.
				select {
				case <-changed:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			continue
		}
		// Somebody else reads: wait for the answer, the reader to stop, a
		// new channel, or the end of ctx.
		if p.wake == nil {
			p.wake = make(chan struct{})
		}
		wake, free := p.wake, c.free
		c.followers++
		c.mu.Unlock()
		select {
		case <-wake:
		case <-free:
		case <-changed:
		case <-ctx.Done():
		}
		c.mu.Lock()
		c.followers--
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// read receives one message on ch and delivers it if it is an answer.
func (c *Caller) read(ctx context.Context, ch rdma.Channel) error {
	if err := ch.Recv(ctx, &c.in); err != nil {
		return err
	}
	kind, id, _, err := decode(c.in.Header)
	if err != nil || (kind != KindReply && kind != KindError) {
		c.log.WithField("conn_id", ch.ConnID()).Debug("call: dropped a message that is not an answer")
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[id]
	if !ok || p.answered {
		return nil // the answer to a call sent twice, or given up
	}
	p.answered = true
	if kind == KindError {
		p.err = &RemoteError{Message: string(c.in.Payload)}
	} else {
		p.reply = append([]byte(nil), c.in.Payload...)
	}
	if p.wake != nil {
		close(p.wake)
	}
	return nil
}

func (c *Caller) stopReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	if c.followers > 0 {
		close(c.free)
		c.free = make(chan struct{})
	}
}

// Send sends a one-way message: it returns once the message is handed to
// the current channel, which delivers it or, if it breaks first, has it
// sent again on the next channel. Send waits for a channel while there is
// none, until ctx ends.
func (c *Caller) Send(ctx context.Context, header, payload []byte) error {
	h, err := encode(nil, KindSend, 0, header)
	if err != nil {
		return err
	}
	m := rdma.Message{Header: h, Payload: payload}
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
	return len(c.pending)
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
	c.mu.Unlock()
	c.cancel()
	c.resend.Wait()
}
