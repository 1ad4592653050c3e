package inproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

// Name is the provider's name.
const Name = "inproc"

// addresses maps listener names to listeners, process-wide.
var addresses = struct {
	sync.Mutex
	m    map[string]*listener
	next atomic.Uint64
}{m: make(map[string]*listener)}

type provider struct {
	opts options
}

// New returns the inproc provider.
func New(opts ...Option) rdma.Provider {
	return &provider{opts: newOptions(opts)}
}

func (p *provider) Name() string { return Name }

// Listen registers a listener under addr, a free-form name; an empty addr
// picks a unique one.
func (p *provider) Listen(_ context.Context, addr string) (rdma.Listener, error) {
	addresses.Lock()
	defer addresses.Unlock()
	if addr == "" {
		addr = fmt.Sprintf("inproc-%d", addresses.next.Add(1))
	}
	if _, ok := addresses.m[addr]; ok {
		return nil, fmt.Errorf("%w: inproc address %q in use", rdma.ErrInvalidArgument, addr)
	}
	l := &listener{
		p:       p,
		addr:    addr,
		table:   core.NewTable(),
		closing: make(chan struct{}),
		log:     p.opts.log.WithFields(logrus.Fields{"provider": Name, "addr": addr}),
	}
	addresses.m[addr] = l
	return l, nil
}

func (p *provider) Dial(ctx context.Context, addr, connID string, secret rdma.Secret) (rdma.Channel, error) {
	if err := rdma.ValidateConnID(connID); err != nil {
		return nil, err
	}
	c, err := p.handshake(ctx, addr, connID, &secret, true)
	if errors.Is(err, handshake.ErrEarlyRefused) { // not the connection's first channel
		c, err = p.handshake(ctx, addr, connID, &secret, false)
	}
	if err != nil {
		return nil, err
	}
	defer c.close()
	select {
	case <-c.link.ready:
		return c.link.e, nil
	case <-c.peerClosed:
		// The listener closes its end of the pipe after handing the link over.
		select {
		case <-c.link.ready:
			return c.link.e, nil
		default:
		}
		c.link.giveUp()
		return nil, fmt.Errorf("dial inproc %q for %q: listener went away: %w", addr, connID, rdma.ErrPeerLost)
	case <-ctx.Done():
		c.link.giveUp()
		return nil, ctx.Err()
	}
}

// handshake opens a pipe to the listener at addr and runs the handshake.
func (p *provider) handshake(ctx context.Context, addr, connID string, secret *rdma.Secret, early bool) (*pipeEnd, error) {
	c, err := dialPipe(addr)
	if err != nil {
		return nil, err
	}
	c.ctx = ctx
	if err := handshake.Client(c, Name, connID, secret, handshake.ClientOptions{Early: early}); err != nil {
		c.link.giveUp()
		c.close()
		return nil, fmt.Errorf("dial inproc %q for %q: %w", addr, connID, err)
	}
	return c, nil
}

// handoff passes the dialer's end of a new link from the listener to the
// dialer, or closes it if the dialer gave up.
type handoff struct {
	mu     sync.Mutex
	e      *end
	gaveUp bool
	ready  chan struct{}
}

// put hands e over and reports whether it did; when the dialer is gone it
// closes e.
func (h *handoff) put(e *end) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gaveUp {
		_ = e.Close()
		return false
	}
	h.e = e
	close(h.ready)
	return true
}

// giveUp tells the listener that the dialer left; an end already handed
// over is closed.
func (h *handoff) giveUp() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gaveUp = true
	if h.e != nil {
		_ = h.e.Close()
		h.e = nil
	}
}

type listener struct {
	p       *provider
	addr    string
	table   *core.Table
	log     logrus.FieldLogger
	wg      sync.WaitGroup
	mu      sync.Mutex
	closed  bool
	closing chan struct{}
}

func (l *listener) Addr() string { return l.addr }

func (l *listener) Expect(connID string, secret rdma.Secret) (rdma.Endpoint, error) {
	return l.table.Expect(connID, secret)
}

func (l *listener) Stats() rdma.ListenerStats { return l.table.Stats() }

func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.closing)
	l.mu.Unlock()
	addresses.Lock()
	if addresses.m[l.addr] == l {
		delete(addresses.m, l.addr)
	}
	addresses.Unlock()
	l.wg.Wait()
	l.table.Close()
	return nil
}

// dialPipe connects a message pipe to the listener at addr and starts the
// listener's side of the handshake on it.
func dialPipe(addr string) (*pipeEnd, error) {
	addresses.Lock()
	l, ok := addresses.m[addr]
	addresses.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial inproc %q: nothing listens there: %w", addr, rdma.ErrUnreachable)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("dial inproc %q: listener closed: %w", addr, rdma.ErrUnreachable)
	}
	client, server := newPipe()
	l.wg.Add(1)
	go l.serve(server)
	return client, nil
}

// serve runs the listener's side of one handshake and hands the link out.
func (l *listener) serve(c *pipeEnd) {
	defer l.wg.Done()
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), l.p.opts.handshakeTimeout)
	defer cancel()
	c.ctx = ctx
	c.abort = l.closing
	var ticket *core.Ticket
	connID, err := handshake.Server(c, Name, l.table.Secret, func(id string, early bool) error {
		tk, err := l.table.Admit(id, early)
		ticket = tk
		return err
	}, nil)
	if err != nil {
		if ticket != nil {
			ticket.Cancel()
		}
		l.table.HandshakeFailed(l.log.WithField("conn_id", connID), err)
		return
	}
	// The dialer's end first: a dialer that left after the handshake gets
	// nothing delivered, which would count as attached until its end was
	// closed and refuse the connection's next dialer meanwhile.
	lk := newLink(connID, l.p.opts.window)
	if !c.link.put(lk.ends[0]) {
		ticket.Cancel()
		return
	}
	if err := ticket.Deliver(lk.ends[1]); err != nil {
		_ = lk.ends[0].Close()
	}
	l.log.WithField("conn_id", connID).Debug(core.LogAttached)
}

// pipeEnd is one end of an in-memory message pipe carrying the handshake.
type pipeEnd struct {
	in         <-chan []byte
	out        chan<- []byte
	closed     chan struct{}
	peerClosed <-chan struct{}
	once       *sync.Once
	link       *handoff
	ctx        context.Context
	abort      <-chan struct{}
}

func newPipe() (client, server *pipeEnd) {
	a, b := make(chan []byte, 4), make(chan []byte, 4)
	ca, cb := make(chan struct{}), make(chan struct{})
	link := &handoff{ready: make(chan struct{})}
	client = &pipeEnd{in: b, out: a, closed: ca, peerClosed: cb, once: new(sync.Once), link: link, ctx: context.Background()}
	server = &pipeEnd{in: a, out: b, closed: cb, peerClosed: ca, once: new(sync.Once), link: link, ctx: context.Background()}
	return client, server
}

var errPipeClosed = errors.New("inproc handshake pipe closed")

func (c *pipeEnd) WriteMsg(msg []byte) error {
	select {
	case c.out <- append([]byte(nil), msg...):
		return nil
	case <-c.peerClosed:
		return errPipeClosed
	case <-c.closed:
		return errPipeClosed
	case <-c.abort:
		return errPipeClosed
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

func (c *pipeEnd) ReadMsg(buf []byte) ([]byte, error) {
	deliver := func(msg []byte) ([]byte, error) {
		if len(msg) > len(buf) {
			return nil, fmt.Errorf("%w: handshake message of %d bytes", rdma.ErrProtocol, len(msg))
		}
		return buf[:copy(buf, msg)], nil
	}
	select {
	case msg := <-c.in:
		return deliver(msg)
	case <-c.peerClosed:
		// What the peer wrote before closing is still read.
		select {
		case msg := <-c.in:
			return deliver(msg)
		default:
			return nil, io.EOF
		}
	case <-c.closed:
		return nil, errPipeClosed
	case <-c.abort:
		return nil, errPipeClosed
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
}

func (c *pipeEnd) close() { c.once.Do(func() { close(c.closed) }) }
