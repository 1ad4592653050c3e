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

// pending is a call waiting for its answer.
type pending struct {
	msg    rdma.Message  // header and a copy of the payload, kept for sending again
	sentOn rdma.Channel  // the channel that carries it, nil when it must be sent again
	done   chan struct{} // closed with the answer
	reply  []byte
	err    error
}

// Caller makes calls and sends one-way messages over a connection's current
// channel. Bind gives it the channel, and every later one when the
// connection heals; calls wait across a change of channel.
type Caller struct {
	log    *logrus.Entry
	ctx    context.Context // of the readers, ended by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	ch      rdma.Channel
	changed chan struct{} // closed when ch changes or the caller closes
	closed  bool
	nextID  uint64
	pending map[uint64]*pending
	readers sync.WaitGroup
}

// NewCaller returns a caller without a channel yet.
func NewCaller(log *logrus.Entry) *Caller {
	ctx, cancel := context.WithCancel(context.Background())
	return &Caller{log: log, ctx: ctx, cancel: cancel, changed: make(chan struct{}), pending: map[uint64]*pending{}}
}

// Bind makes ch the caller's channel; old, if any, is the channel it
// replaces, whose unacknowledged messages were already sent again on ch.
// Calls that old carried and that are not among those, or that were never
// sent, are sent again on ch, marked as retries when they had been sent.
// Bind does not block: it fits rdma.BindFunc.
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
		case old != nil && p.sentOn == old && replayed[id]:
			p.sentOn = ch
		case p.sentOn != nil: // answered by nobody: sent again, as a retry
			p.msg.Flags |= rdma.FlagRetry
			p.sentOn = ch
			resend = append(resend, p)
		}
		// p.sentOn == nil: its Call sends it when it sees the change.
	}
	c.ch = ch
	close(c.changed)
	c.changed = make(chan struct{})
	c.readers.Add(1)
	c.mu.Unlock()

	go c.read(ch, resend)
}

// read sends the calls Bind gave it, then delivers the answers that arrive
// on ch until ch ends.
func (c *Caller) read(ch rdma.Channel, resend []*pending) {
	defer c.readers.Done()
	ctx := c.ctx
	for _, p := range resend {
		if _, err := ch.Send(ctx, &p.msg); err != nil {
			c.unsent(p, ch)
		}
	}
	var in rdma.Message
	for ch.Recv(ctx, &in) == nil {
		kind, id, _, err := decode(in.Header)
		if err != nil || (kind != KindReply && kind != KindError) {
			c.log.WithField("conn_id", ch.ConnID()).Debug("call: dropped a message that is not an answer")
			continue
		}
		c.mu.Lock()
		p, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !ok {
			continue // the answer to a call that was sent twice, or given up
		}
		if kind == KindError {
			p.err = &RemoteError{Message: string(in.Payload)}
		} else {
			p.reply = append([]byte(nil), in.Payload...)
		}
		close(p.done)
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

// current returns the channel and the signal of its change.
func (c *Caller) current() (rdma.Channel, <-chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch, c.changed, c.closed
}

// Call sends payload with header and waits for the answer until ctx ends.
// It copies payload: the caller may reuse it once Call returns.
func (c *Caller) Call(ctx context.Context, header, payload []byte) ([]byte, error) {
	p := &pending{done: make(chan struct{})}
	p.msg.Payload = append([]byte(nil), payload...)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.nextID++
	id := c.nextID
	var err error
	if p.msg.Header, err = encode(nil, KindCall, id, header); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.pending[id] = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	for {
		c.mu.Lock()
		ch, changed, closed := c.ch, c.changed, c.closed
		send := ch != nil && p.sentOn == nil
		if send {
			p.sentOn = ch
		}
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if send {
			if _, err := ch.Send(ctx, &p.msg); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				c.unsent(p, ch)
			}
		}
		select {
		case <-p.done:
			return p.reply, p.err
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
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

// Pending returns how many calls wait for their answer.
func (c *Caller) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Close fails every waiting call with ErrClosed and stops the readers. It
// does not close the channel, which belongs to the connection.
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
	c.readers.Wait()
}
