//go:build rdmaverbs && cgo

package verbs

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

type provider struct {
	o options
}

// New returns the verbs provider.
func New(opts ...Option) rdma.Provider {
	return &provider{o: newOptions(opts)}
}

// Available reports why the provider cannot work here (no RDMA device), or nil.
func Available() error {
	if deviceCount() == 0 {
		return ErrNoDevice
	}
	return nil
}

func (p *provider) Name() string { return Name }

func (p *provider) deadline(ctx context.Context) time.Time {
	deadline := time.Now().Add(p.o.handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return deadline
}

// Dial connects to the listener at addr ("ip:port", resolved by the RDMA
// connection manager) and opens the channel for connID.
func (p *provider) Dial(ctx context.Context, addr, connID string, secret rdma.Secret) (rdma.Channel, error) {
	if err := rdma.ValidateConnID(connID); err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, fmt.Errorf("dial verbs %s: %w: %w", addr, rdma.ErrUnreachable, err)
	}
	deadline := p.deadline(ctx)
	cm, err := newCMChannel()
	if err != nil {
		return nil, fmt.Errorf("dial verbs %s: %w", addr, err)
	}
	id, err := createID(cm)
	if err != nil {
		cm.close()
		return nil, fmt.Errorf("dial verbs %s: %w", addr, err)
	}
	var q *qp
	fail := func(err error) (rdma.Channel, error) {
		if q != nil {
			q.destroy()
		}
		cmDestroyID(id)
		cm.close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("dial verbs %s for %q: %w", addr, connID, ctxErr)
		}
		return nil, fmt.Errorf("dial verbs %s for %q: %w", addr, connID, core.DialError(err))
	}
	if err := resolve(ctx, cm, id, addr, deadline); err != nil {
		return fail(err)
	}
	if q, err = newQP(id, p.o.slots, p.o.slotSize); err != nil {
		return fail(err)
	}
	if err := connectID(id); err != nil {
		return fail(err)
	}
	if err := cm.expect(deadline, cmEstablished); err != nil {
		return fail(err)
	}
	log := p.o.log.WithFields(logrus.Fields{"provider": Name, "addr": addr, "conn_id": connID})
	c := newChannel(ctx, &p.o, q, connID, log)
	c.cm, c.cmDone = cm, make(chan struct{})
	go c.cmLoop()
	// The full handshake, without pipelining: the engine's stages expect the
	// setup after the verdict. (Untested without a device: kept as it ran.)
	err = handshake.Client(hsConn{ctx: ctx, c: c, deadline: deadline}, Name, connID, &secret, handshake.ClientOptions{})
	if err == nil {
		err = c.setup(ctx, deadline)
	}
	if err != nil {
		_ = c.Close() //nolint:contextcheck // Close has no context; the channel's own bounds the goodbye
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("dial verbs %s for %q: %w", addr, connID, ctxErr)
		}
		return nil, fmt.Errorf("dial verbs %s for %q: %w", addr, connID, core.DialError(err))
	}
	return c, nil
}

// cmLoop follows the dialer's connection events.
func (c *channel) cmLoop() {
	defer close(c.cmDone)
	for {
		ev, err := c.cm.next(time.Time{})
		if err != nil {
			return
		}
		switch ev.event {
		case cmDisconnected, cmDeviceRemoval:
			c.onDisconnected()
		case cmTimewaitExit:
		default:
			c.log.WithField("event", eventName(ev.event)).Debug("rdma connection event")
		}
	}
}

// Listen listens on addr ("ip:port"; port 0 picks one).
func (p *provider) Listen(ctx context.Context, addr string) (rdma.Listener, error) {
	if err := Available(); err != nil {
		return nil, fmt.Errorf("listen verbs %s: %w", addr, err)
	}
	cm, err := newCMChannel()
	if err != nil {
		return nil, fmt.Errorf("listen verbs %s: %w", addr, err)
	}
	id, err := createID(cm)
	if err != nil {
		cm.close()
		return nil, fmt.Errorf("listen verbs %s: %w", addr, err)
	}
	port, err := bindListen(id, addr)
	if err != nil {
		cmDestroyID(id)
		cm.close()
		return nil, fmt.Errorf("listen verbs %s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	bound := net.JoinHostPort(host, strconv.Itoa(port))
	l := &listener{
		ctx:      context.WithoutCancel(ctx),
		p:        p,
		cm:       cm,
		id:       id,
		addr:     bound,
		table:    core.NewTable(),
		log:      p.o.log.WithFields(logrus.Fields{"provider": Name, "addr": bound}),
		conns:    make(map[uintptr]*channel),
		loopDone: make(chan struct{}),
	}
	go l.loop(context.WithoutCancel(ctx))
	return l, nil
}

type listener struct {
	ctx      context.Context
	p        *provider
	cm       *cmChannel
	id       *cmID
	addr     string
	table    *core.Table
	log      logrus.FieldLogger
	mu       sync.Mutex
	conns    map[uintptr]*channel // by connection manager ID, until closed
	pending  int
	closed   bool
	wg       sync.WaitGroup
	loopDone chan struct{}
}

// key identifies a connection manager ID in a map (the pointer is never
// rebuilt from it).
func key(id *cmID) uintptr { return uintptr(unsafe.Pointer(id)) } //nolint:gosec // G103: a map key only

func (l *listener) Addr() string { return l.addr }

func (l *listener) Expect(connID string, secret rdma.Secret) (rdma.Endpoint, error) {
	return l.table.Expect(connID, secret)
}

func (l *listener) Stats() rdma.ListenerStats { return l.table.Stats() }

// loop follows the connection events of the listener and its channels.
func (l *listener) loop(ctx context.Context) {
	defer close(l.loopDone)
	for {
		ev, err := l.cm.next(time.Time{})
		if err != nil {
			return
		}
		switch ev.event {
		case cmConnectRequest:
			l.request(ev.id)
		case cmEstablished:
			l.mu.Lock()
			c := l.conns[key(ev.id)]
			if c != nil {
				l.wg.Add(1)
			}
			l.mu.Unlock()
			if c != nil {
				go l.serve(ctx, c)
			}
		case cmTimewaitExit:
		default: // disconnected, rejected, errors: the channel ends
			l.mu.Lock()
			c := l.conns[key(ev.id)]
			l.mu.Unlock()
			if c != nil {
				c.onDisconnected()
			}
		}
	}
}

// request sets a queue pair up for a connection request and accepts it;
// the handshake starts once it is established.
func (l *listener) request(id *cmID) {
	l.mu.Lock()
	refuse := l.closed || l.pending >= l.p.o.maxHandshakes
	if !refuse {
		l.pending++
	}
	l.mu.Unlock()
	if refuse {
		l.table.CountHandshakeFailure()
		l.log.Warn("rdma connection request refused: listener closing or too many handshakes")
		rejectID(id)
		cmDestroyID(id)
		return
	}
	q, err := newQP(id, l.p.o.slots, l.p.o.slotSize)
	if err == nil {
		err = acceptID(id)
		if err != nil {
			q.destroy()
		}
	} else {
		rejectID(id)
	}
	if err != nil {
		l.mu.Lock()
		l.pending--
		l.mu.Unlock()
		l.table.CountHandshakeFailure()
		l.log.WithError(err).Warn(core.LogHandshakeFailed)
		cmDestroyID(id)
		return
	}
	c := newChannel(l.ctx, &l.p.o, q, "", l.log)
	c.eng.serverRole = true
	c.onProtocolError = l.table.CountProtocolError
	c.onClose = func() {
		l.mu.Lock()
		delete(l.conns, key(id))
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.conns[key(id)] = c
	l.mu.Unlock()
}

// serve authenticates an established connection and hands its channel to
// its endpoint.
func (l *listener) serve(ctx context.Context, c *channel) {
	defer l.wg.Done()
	deadline := time.Now().Add(l.p.o.handshakeTimeout)
	var ticket *core.Ticket
	connID, err := handshake.Server(hsConn{ctx: c.ctx, c: c, deadline: deadline}, Name, l.table.Secret, func(id string, early bool) error {
		tk, err := l.table.Admit(id, early)
		ticket = tk
		if err == nil {
			c.mu.Lock()
			c.eng.stage = stageSetup // before the OK: the dialer's setup may follow at once
			c.mu.Unlock()
		}
		return err
	}, nil)
	if err == nil {
		c.connID.Store(&connID)
		err = c.setup(ctx, deadline)
	}
	l.mu.Lock()
	l.pending--
	if err == nil && l.closed {
		err = fmt.Errorf("listener %w", rdma.ErrClosed)
	}
	l.mu.Unlock()
	if err != nil {
		if ticket != nil {
			ticket.Cancel()
		}
		l.table.HandshakeFailed(l.log.WithField("conn_id", connID), err)
		_ = c.Close() //nolint:contextcheck // Close has no context; the channel's own bounds the goodbye
		return
	}
	if err := ticket.Deliver(c); err != nil {
		l.log.WithField("conn_id", connID).WithError(err).Debug("rdma channel attached to a closed endpoint")
		return
	}
	l.log.WithField("conn_id", connID).Debug(core.LogAttached)
}

func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.cm.pf.close()
	<-l.loopDone
	l.table.Close() // closes the attached channels
	l.mu.Lock()
	var rest []*channel
	for _, c := range l.conns {
		rest = append(rest, c)
	}
	l.mu.Unlock()
	for _, c := range rest { // channels in their handshake
		_ = c.Close()
	}
	l.wg.Wait()
	cmDestroyID(l.id)
	l.cm.close()
	return nil
}
