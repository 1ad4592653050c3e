package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

// Name is the provider's name.
const Name = "tcp"

type provider struct {
	o options
}

// New returns the tcp provider.
func New(opts ...Option) rdma.Provider {
	return &provider{o: newOptions(opts)}
}

func (p *provider) Name() string { return Name }

// Dial connects to the listener at addr ("host:port") and opens the
// channel for connID: with the early handshake (one round trip, the
// connection's first channel), then, if the listener refuses it, with the
// full one.
func (p *provider) Dial(ctx context.Context, addr, connID string, secret rdma.Secret) (rdma.Channel, error) {
	if err := rdma.ValidateConnID(connID); err != nil {
		return nil, err
	}
	nc, win, err := p.attach(ctx, addr, connID, &secret, true)
	if errors.Is(err, handshake.ErrEarlyRefused) { // not the connection's first channel
		nc, win, err = p.attach(ctx, addr, connID, &secret, false)
	}
	if err != nil {
		return nil, err
	}
	log := p.o.log.WithFields(logrus.Fields{"provider": Name, "addr": addr, "conn_id": connID})
	return newChannel(ctx, &p.o, nc, connID, win.msgs, win.bytes, log, nil), nil
}

// window is the receive window a peer announces in its setup.
type window struct{ msgs, bytes int }

// attach connects to addr and runs the handshake and the setup; our setup
// goes out with our last handshake message.
func (p *provider) attach(ctx context.Context, addr, connID string, secret *rdma.Secret, early bool) (net.Conn, window, error) {
	nc, err := p.o.dial(ctx, addr)
	if err != nil {
		return nil, window{}, fmt.Errorf("dial tcp %s: %w: %w", addr, rdma.ErrUnreachable, err)
	}
	tune(nc, &p.o)
	deadline := time.Now().Add(p.o.handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	var win window
	err = handshake.Client(handshake.StreamConn{RW: nc}, Name, connID, secret, handshake.ClientOptions{
		Early: early,
		Then:  func() error { return writeSetup(nc, &p.o) },
	})
	if err == nil {
		win.msgs, win.bytes, err = readSetup(nc)
	}
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err == nil {
		err = nc.SetDeadline(time.Time{})
	}
	if err != nil {
		_ = nc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, window{}, fmt.Errorf("dial tcp %s for %q: %w", addr, connID, ctxErr)
		}
		return nil, window{}, fmt.Errorf("dial tcp %s for %q: %w", addr, connID, core.DialError(err))
	}
	return nc, win, nil
}

// tune applies the socket options a channel's connection needs.
func tune(nc net.Conn, o *options) {
	tc, ok := nc.(*net.TCPConn)
	if !ok || o.userTimeout <= 0 {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.userTimeout/time.Millisecond))
	})
}

// writeSetup sends our receive window.
func writeSetup(nc net.Conn, o *options) error {
	var out [setupSize]byte
	encodeSetup(out[:], o.windowMessages, o.windowBytes)
	_, err := nc.Write(out[:])
	return err
}

// readSetup reads the peer's receive window.
func readSetup(nc net.Conn) (int, int, error) {
	var in [setupSize]byte
	if _, err := io.ReadFull(nc, in[:]); err != nil {
		return 0, 0, err
	}
	return decodeSetup(in[:])
}

// Listen listens on addr ("host:port"; ":0" or "" picks a free port on all
// interfaces, "127.0.0.1:0" on loopback).
func (p *provider) Listen(ctx context.Context, addr string) (rdma.Listener, error) {
	if addr == "" {
		addr = ":0"
	}
	lc := net.ListenConfig{KeepAliveConfig: p.o.keepAlive}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	l := &listener{
		ctx:   context.WithoutCancel(ctx),
		p:     p,
		ln:    ln,
		table: core.NewTable(),
		log:   p.o.log.WithFields(logrus.Fields{"provider": Name, "addr": ln.Addr().String()}),
	}
	l.acceptor = core.NewAcceptor(ln.Accept, l.serve, p.o.maxHandshakes, l.table, l.log)
	l.acceptor.Start()
	return l, nil
}

type listener struct {
	ctx      context.Context // values for the listener's lifetime
	p        *provider
	ln       net.Listener
	table    *core.Table
	log      logrus.FieldLogger
	acceptor *core.Acceptor[net.Conn]
}

func (l *listener) Addr() string { return l.ln.Addr().String() }

func (l *listener) Expect(connID string, secret rdma.Secret) (rdma.Endpoint, error) {
	return l.table.Expect(connID, secret)
}

func (l *listener) Stats() rdma.ListenerStats { return l.table.Stats() }

// serve authenticates one connection and hands its channel to its endpoint.
func (l *listener) serve(nc net.Conn) {
	tune(nc, &l.p.o)
	_ = nc.SetDeadline(time.Now().Add(l.p.o.handshakeTimeout))
	var ticket *core.Ticket
	connID, err := handshake.Server(handshake.StreamConn{RW: nc}, Name, l.table.Secret, func(id string, early bool) error {
		tk, err := l.table.Admit(id, early)
		ticket = tk
		return err
	}, nil)
	var winMsgs, winBytes int
	if err == nil {
		if err = writeSetup(nc, &l.p.o); err == nil {
			winMsgs, winBytes, err = readSetup(nc)
		}
	}
	if err == nil {
		err = nc.SetDeadline(time.Time{})
	}
	if err == nil && l.acceptor.Handshaken(nc) {
		err = fmt.Errorf("listener %w", rdma.ErrClosed)
	}
	log := l.log.WithFields(logrus.Fields{"conn_id": connID, "remote": nc.RemoteAddr().String()})
	if err != nil {
		if ticket != nil {
			ticket.Cancel()
		}
		l.acceptor.Fail(nc, log, err)
		return
	}
	ch := newChannel(l.ctx, &l.p.o, nc, connID, winMsgs, winBytes, log, l.table.CountProtocolError)
	if err := ticket.Deliver(ch); err != nil {
		log.WithError(err).Debug("rdma channel attached to a closed endpoint")
		return
	}
	log.Debug(core.LogAttached)
}

func (l *listener) Close() error {
	err := l.acceptor.Close(l.ln.Close)
	l.table.Close()
	return err
}
