package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

// Name is the provider's name.
const Name = "shm"

type provider struct {
	o options
}

// New returns the shm provider.
func New(opts ...Option) rdma.Provider {
	return &provider{o: newOptions(opts)}
}

func (p *provider) Name() string { return Name }

// packetConn carries handshake messages, one per seqpacket.
type packetConn struct{ c *net.UnixConn }

func (pc packetConn) WriteMsg(msg []byte) error {
	_, err := pc.c.Write(msg)
	return err
}

func (pc packetConn) ReadMsg(buf []byte) ([]byte, error) {
	n, err := pc.c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// peerCredentials returns the credentials of the process at the other end.
func peerCredentials(c *net.UnixConn) (unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, err
	}
	if cerr != nil {
		return unix.Ucred{}, cerr
	}
	return *cred, nil
}

// Dial connects to the listener's socket at addr (a path) and opens the
// channel for connID: it proposes the rings, in a memfd it creates, with
// the early handshake (one round trip, the connection's first channel),
// then, if the listener refuses that, with the full one.
func (p *provider) Dial(ctx context.Context, addr, connID string, secret rdma.Secret) (rdma.Channel, error) {
	if err := rdma.ValidateConnID(connID); err != nil {
		return nil, err
	}
	lay := layout{slots: uint64(p.o.slots), dataSize: uint64(p.o.dataSize)}
	if err := lay.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", rdma.ErrInvalidArgument, err)
	}
	parts, err := p.attach(ctx, addr, lay, connID, &secret, true)
	if errors.Is(err, handshake.ErrEarlyRefused) { // not the connection's first channel
		parts, err = p.attach(ctx, addr, lay, connID, &secret, false)
	}
	if err != nil {
		return nil, err
	}
	parts.connID = connID
	parts.log = p.o.log.WithFields(logrus.Fields{"provider": Name, "addr": addr, "conn_id": connID})
	return newChannel(&p.o, parts), nil
}

// attach connects to addr and runs the handshake and the setup.
func (p *provider) attach(ctx context.Context, addr string, lay layout, connID string, secret *rdma.Secret, early bool) (channelParts, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", addr)
	if err != nil {
		return channelParts{}, fmt.Errorf("dial shm %s: %w: %w", addr, rdma.ErrUnreachable, err)
	}
	conn := nc.(*net.UnixConn)
	deadline := time.Now().Add(p.o.handshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	parts, err := p.dialSetup(conn, lay, connID, secret, early)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		parts.release()
		_ = conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return channelParts{}, fmt.Errorf("dial shm %s for %q: %w", addr, connID, ctxErr)
		}
		return channelParts{}, fmt.Errorf("dial shm %s for %q: %w", addr, connID, core.DialError(err))
	}
	parts.conn = conn
	return parts, nil
}

// release frees what a failed setup had acquired.
func (p *channelParts) release() {
	if p.mem != nil {
		_ = unix.Munmap(p.mem)
	}
	if p.rxWait != nil {
		p.rxWait.close()
	}
	if p.txWait != nil {
		p.txWait.close()
	}
	if p.peerRxFD >= 0 {
		_ = unix.Close(p.peerRxFD)
	}
	if p.peerTxFD >= 0 {
		_ = unix.Close(p.peerTxFD)
	}
}

// dialSetup runs the dialer's handshake and setup: the rings go out right
// after our last handshake message, and the listener's connected, with its
// eventfds, follows its verdict.
func (p *provider) dialSetup(conn *net.UnixConn, lay layout, connID string, secret *rdma.Secret, early bool) (channelParts, error) {
	parts := channelParts{lay: lay, txRing: 0, rxRing: 1, peerRxFD: -1, peerTxFD: -1}
	cred, err := peerCredentials(conn)
	if err != nil {
		return parts, err
	}
	if err := p.o.peerCheck(cred); err != nil {
		return parts, fmt.Errorf("%w: the listener's credentials: %w", rdma.ErrAuth, err)
	}
	err = handshake.Client(packetConn{conn}, Name, connID, secret, handshake.ClientOptions{
		Early: early,
		Then:  func() error { return offerRings(conn, &parts) },
	})
	if err != nil {
		return parts, err
	}
	m, fds, err := recvCtl(conn)
	if err != nil {
		return parts, err
	}
	if m.typ != ctlConnected || m.a != 0 || m.b != 0 || m.c != 0 {
		closeFDs(fds)
		return parts, fmt.Errorf("%w: control message %d instead of connected", rdma.ErrProtocol, m.typ)
	}
	parts.peerRxFD, parts.peerTxFD = fds[0], fds[1]
	if !isEventfd(parts.peerRxFD) || !isEventfd(parts.peerTxFD) {
		return parts, fmt.Errorf("%w: the listener's descriptors are not eventfds", rdma.ErrProtocol)
	}
	return parts, nil
}

// offerRings creates the rings and our eventfds and sends them in the
// setup message. The rings are empty until the listener proved the secret:
// nothing is written into them before Dial returns.
func offerRings(conn *net.UnixConn, parts *channelParts) error {
	var err error
	if parts.rxWait, err = newWaiter(); err != nil {
		return err
	}
	if parts.txWait, err = newWaiter(); err != nil {
		return err
	}
	// Not populated: faulting in the 4 MiB of rings up front cost 3 ms of
	// every dial (a heal's, too); the pages fault in on the ring's first
	// pass instead, and the steady state is the same.
	lay := parts.lay
	fd, mem, err := createMemfd("tether-shm-rings", lay.totalSize(), false)
	if err != nil {
		return err
	}
	parts.mem = mem
	lay.writeHeader(mem)
	// Ring 0 is ours to produce: the listener kicks txWait when it consumed.
	// Ring 1 is ours to consume: the listener kicks rxWait when it published.
	err = sendCtl(conn, ctlMsg{typ: ctlSetup, a: uint32(lay.slots), b: lay.dataSize, c: lay.totalSize()}, fd, parts.txWait.fd, parts.rxWait.fd)
	_ = unix.Close(fd)
	return err
}

// Listen listens on a unix seqpacket socket at addr, a path; the socket is
// made 0600. An empty addr creates a private directory (0700) for it.
func (p *provider) Listen(ctx context.Context, addr string) (rdma.Listener, error) {
	dir := ""
	if addr == "" {
		d, err := os.MkdirTemp("", "tether-shm-")
		if err != nil {
			return nil, fmt.Errorf("listen shm: %w", err)
		}
		dir = d
		addr = filepath.Join(d, "shm.sock")
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
	if errors.Is(err, syscall.EADDRINUSE) && removeStale(ctx, addr) {
		ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
	}
	if err == nil {
		if err = os.Chmod(addr, 0o600); err != nil {
			_ = ln.Close()
		}
	}
	if err != nil {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("listen shm %s: %w", addr, err)
	}
	l := &listener{
		p:     p,
		ln:    ln,
		addr:  addr,
		dir:   dir,
		table: core.NewTable(),
		log:   p.o.log.WithFields(logrus.Fields{"provider": Name, "addr": addr}),
	}
	l.acceptor = core.NewAcceptor(ln.AcceptUnix, l.serve, p.o.maxHandshakes, l.table, l.log)
	l.acceptor.Start()
	return l, nil
}

// removeStale removes a socket file left at path by a listener that is
// gone (nothing accepts on it any more) and reports whether it did. A live
// listener's socket, or a file that is not a socket, is left alone.
func removeStale(ctx context.Context, path string) bool {
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err == nil {
		_ = c.Close()
		return false
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	return os.Remove(path) == nil
}

type listener struct {
	p        *provider
	ln       *net.UnixListener
	addr     string
	dir      string
	table    *core.Table
	log      logrus.FieldLogger
	acceptor *core.Acceptor[*net.UnixConn]
}

func (l *listener) Addr() string { return l.addr }

func (l *listener) Expect(connID string, secret rdma.Secret) (rdma.Endpoint, error) {
	return l.table.Expect(connID, secret)
}

func (l *listener) Stats() rdma.ListenerStats { return l.table.Stats() }

// serve authenticates one dialer, maps its rings and hands the channel to
// its endpoint.
func (l *listener) serve(conn *net.UnixConn) {
	_ = conn.SetDeadline(time.Now().Add(l.p.o.handshakeTimeout))
	var ticket *core.Ticket
	var connID string
	parts, cred, err := l.setup(conn, &connID, &ticket)
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err == nil && l.acceptor.Handshaken(conn) {
		err = fmt.Errorf("listener %w", rdma.ErrClosed)
	}
	log := l.log.WithFields(logrus.Fields{"conn_id": connID, "peer_pid": cred.Pid, "peer_uid": cred.Uid})
	if err != nil {
		if ticket != nil {
			ticket.Cancel()
		}
		parts.release()
		l.acceptor.Fail(conn, log, err)
		return
	}
	parts.conn, parts.connID, parts.log, parts.onProtocolError = conn, connID, log, l.table.CountProtocolError
	ch := newChannel(&l.p.o, parts)
	if err := ticket.Deliver(ch); err != nil {
		log.WithError(err).Debug("rdma channel attached to a closed endpoint")
		return
	}
	log.Debug(core.LogAttached)
}

// setup runs the listener's handshake and setup on conn.
func (l *listener) setup(conn *net.UnixConn, connID *string, ticket **core.Ticket) (channelParts, unix.Ucred, error) {
	parts := channelParts{txRing: 1, rxRing: 0, peerRxFD: -1, peerTxFD: -1}
	cred, err := peerCredentials(conn)
	if err != nil {
		return parts, cred, err
	}
	if err := l.p.o.peerCheck(cred); err != nil {
		return parts, cred, fmt.Errorf("%w: the dialer's credentials: %w", rdma.ErrAuth, err)
	}
	*connID, err = handshake.Server(packetConn{conn}, Name, l.table.Secret, func(id string, early bool) error {
		tk, err := l.table.Admit(id, early)
		*ticket = tk
		return err
	}, nil)
	if err != nil {
		return parts, cred, err
	}
	m, fds, err := recvCtl(conn)
	if err != nil {
		return parts, cred, err
	}
	if m.typ != ctlSetup {
		closeFDs(fds)
		return parts, cred, fmt.Errorf("%w: control message %d instead of setup", rdma.ErrProtocol, m.typ)
	}
	// The dialer sleeps on fds[1] as producer of ring 0 (we kick it after
	// consuming) and on fds[2] as consumer of ring 1 (we kick it after
	// publishing).
	parts.peerTxFD, parts.peerRxFD = fds[1], fds[2]
	parts.lay = layout{slots: uint64(m.a), dataSize: m.b}
	err = parts.lay.validate()
	if err == nil && m.c != parts.lay.totalSize() {
		err = fmt.Errorf("%w: region of %d bytes for rings of %d", rdma.ErrProtocol, m.c, parts.lay.totalSize())
	}
	if err == nil {
		parts.mem, err = mapPeerMemfd(fds[0], m.c, false)
	}
	_ = unix.Close(fds[0])
	if err == nil {
		err = parts.lay.checkHeader(parts.mem)
	}
	if err == nil && (!isEventfd(parts.peerTxFD) || !isEventfd(parts.peerRxFD)) {
		err = fmt.Errorf("%w: the dialer's ring descriptors are not eventfds", rdma.ErrProtocol)
	}
	if err != nil {
		return parts, cred, err
	}
	if parts.rxWait, err = newWaiter(); err != nil {
		return parts, cred, err
	}
	if parts.txWait, err = newWaiter(); err != nil {
		return parts, cred, err
	}
	err = sendCtl(conn, ctlMsg{typ: ctlConnected}, parts.rxWait.fd, parts.txWait.fd)
	return parts, cred, err
}

func (l *listener) Close() error {
	err := l.acceptor.Close(l.ln.Close)
	l.table.Close()
	if l.dir != "" {
		_ = os.RemoveAll(l.dir)
	}
	return err
}
