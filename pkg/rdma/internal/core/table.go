package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

// Table is the set of connection IDs a listener expects, with their
// secrets and endpoints. Providers use it to look secrets up during the
// handshake (Secret), to refuse a second attach (Admit), and to hand the
// channels to the endpoints (Ticket.Deliver). It also keeps the listener's
// counters.
type Table struct {
	mu     sync.Mutex
	eps    map[string]*Endpoint
	closed bool

	accepted, handshakeFailures, rejected, protocolErrors atomic.Uint64
}

// NewTable returns an empty Table.
func NewTable() *Table {
	return &Table{eps: make(map[string]*Endpoint)}
}

// Expect registers connID with secret.
func (t *Table) Expect(connID string, secret rdma.Secret) (*Endpoint, error) {
	if err := rdma.ValidateConnID(connID); err != nil {
		return nil, err
	}
	if secret.IsZero() {
		return nil, fmt.Errorf("%w: zero secret for %q", rdma.ErrInvalidArgument, connID)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("expect %q: listener %w", connID, rdma.ErrClosed)
	}
	if _, ok := t.eps[connID]; ok {
		return nil, fmt.Errorf("%w: %q", rdma.ErrAlreadyExpected, connID)
	}
	ep := &Endpoint{table: t, connID: connID, secret: secret, closed: make(chan struct{}), ready: make(chan struct{}, 1)}
	t.eps[connID] = ep
	return ep, nil
}

// Secret returns the secret expected for connID.
func (t *Table) Secret(connID string) (rdma.Secret, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ep, ok := t.eps[connID]
	if !ok {
		return rdma.Secret{}, false
	}
	return ep.secret, true
}

// Admit reserves connID for a peer that proved the secret. It refuses with
// ErrAlreadyAttached while another channel for connID works or is being set
// up, with ErrUnknownConnection when connID is no longer expected, and an
// early handshake (see package handshake) with handshake.ErrEarlyRefused
// once connID was admitted before. The caller must either Deliver a channel
// on the ticket or Cancel it.
func (t *Table) Admit(connID string, early bool) (*Ticket, error) {
	t.mu.Lock()
	ep, ok := t.eps[connID]
	t.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", rdma.ErrUnknownConnection, connID)
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	switch {
	case ep.isClosed:
		return nil, fmt.Errorf("%w: %q", rdma.ErrUnknownConnection, connID)
	case early && ep.admitted:
		return nil, fmt.Errorf("%w: %q", handshake.ErrEarlyRefused, connID)
	case ep.reserved, working(ep.pending), working(ep.live):
		return nil, fmt.Errorf("%w: %q", rdma.ErrAlreadyAttached, connID)
	}
	ep.reserved, ep.admitted = true, true
	return &Ticket{ep: ep}, nil
}

func working(ch rdma.Channel) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch.Done():
		return false
	default:
		return true
	}
}

// Stats returns the counters.
func (t *Table) Stats() rdma.ListenerStats {
	return rdma.ListenerStats{
		Accepted:          t.accepted.Load(),
		HandshakeFailures: t.handshakeFailures.Load(),
		Rejected:          t.rejected.Load(),
		ProtocolErrors:    t.protocolErrors.Load(),
	}
}

// DialError classifies an error of a dialer's handshake or setup: the rdma
// errors (refused, not authenticated, protocol) stay as they are; anything
// else (the connection broke, a timeout) becomes ErrPeerLost.
func DialError(err error) error {
	for _, e := range []error{rdma.ErrAuth, rdma.ErrUnknownConnection, rdma.ErrAlreadyAttached, rdma.ErrRejected, rdma.ErrProtocol, rdma.ErrPeerLost, rdma.ErrUnreachable} {
		if errors.Is(err, e) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", rdma.ErrPeerLost, err)
}

// HandshakeFailed counts and logs a failed handshake or setup: as Rejected
// when the peer authenticated (or named an unknown connection ID) and was
// refused, as a HandshakeFailure otherwise. An early handshake refused
// because the connection had a channel before is the protocol at work (the
// dialer tries again with the full handshake): it is logged at debug level
// and not counted.
func (t *Table) HandshakeFailed(log logrus.FieldLogger, err error) {
	if errors.Is(err, handshake.ErrEarlyRefused) {
		log.WithError(err).Debug("rdma early handshake refused; the dialer falls back to the full handshake")
		return
	}
	t.countHandshakeError(err) // first: a test that saw the log sees the count
	log.WithError(err).Warn(LogHandshakeFailed)
}

func (t *Table) countHandshakeError(err error) {
	if errors.Is(err, rdma.ErrUnknownConnection) || errors.Is(err, rdma.ErrAlreadyAttached) {
		t.rejected.Add(1)
		return
	}
	t.handshakeFailures.Add(1)
}

// CountHandshakeFailure counts a peer that failed the handshake or setup.
func (t *Table) CountHandshakeFailure() { t.handshakeFailures.Add(1) }

// CountRejected counts an authenticated attach that was refused.
func (t *Table) CountRejected() { t.rejected.Add(1) }

// CountProtocolError counts an accepted channel that broke the protocol.
func (t *Table) CountProtocolError() { t.protocolErrors.Add(1) }

// Close closes every endpoint (and their channels) and refuses new ones.
func (t *Table) Close() {
	t.mu.Lock()
	t.closed = true
	eps := make([]*Endpoint, 0, len(t.eps))
	for _, ep := range t.eps {
		eps = append(eps, ep)
	}
	t.mu.Unlock()
	for _, ep := range eps {
		_ = ep.Close()
	}
}

// Len returns how many connection IDs are expected.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.eps)
}

// Endpoint implements rdma.Endpoint for a Table.
type Endpoint struct {
	table  *Table
	connID string
	secret rdma.Secret

	mu       sync.Mutex
	isClosed bool
	reserved bool
	admitted bool         // once: an early handshake is refused from then on
	pending  rdma.Channel // attached, waiting for Accept
	live     rdma.Channel // returned by Accept
	ready    chan struct{}
	closed   chan struct{}
}

// ConnID returns the endpoint's connection ID.
func (ep *Endpoint) ConnID() string { return ep.connID }

// Accept waits for the next attached channel.
func (ep *Endpoint) Accept(ctx context.Context) (rdma.Channel, error) {
	for {
		ep.mu.Lock()
		if ep.isClosed {
			ep.mu.Unlock()
			return nil, fmt.Errorf("accept %q: endpoint %w", ep.connID, rdma.ErrClosed)
		}
		if ch := ep.pending; ch != nil {
			ep.pending = nil
			old := ep.live
			ep.live = ch
			ep.mu.Unlock()
			if old != nil {
				_ = old.Close()
			}
			return ch, nil
		}
		ep.mu.Unlock()
		select {
		case <-ep.ready:
		case <-ep.closed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops expecting the connection ID and closes its channels.
func (ep *Endpoint) Close() error {
	t := ep.table
	t.mu.Lock()
	if t.eps[ep.connID] == ep {
		delete(t.eps, ep.connID)
	}
	t.mu.Unlock()
	ep.mu.Lock()
	if ep.isClosed {
		ep.mu.Unlock()
		return nil
	}
	ep.isClosed = true
	close(ep.closed)
	pending, live := ep.pending, ep.live
	ep.pending, ep.live = nil, nil
	ep.mu.Unlock()
	if pending != nil {
		_ = pending.Close()
	}
	if live != nil {
		_ = live.Close()
	}
	return nil
}

// Ticket is a reservation made by Admit.
type Ticket struct {
	ep   *Endpoint
	done bool
}

// Endpoint returns the endpoint the ticket reserves.
func (tk *Ticket) Endpoint() *Endpoint { return tk.ep }

// Deliver hands ch to the endpoint, for Accept to return. If the endpoint
// was closed meanwhile, ch is closed and an error returned.
func (tk *Ticket) Deliver(ch rdma.Channel) error {
	ep := tk.ep
	ep.mu.Lock()
	if tk.done {
		ep.mu.Unlock()
		return fmt.Errorf("deliver %q: ticket used twice", ep.connID)
	}
	tk.done = true
	ep.reserved = false
	if ep.isClosed {
		ep.mu.Unlock()
		_ = ch.Close()
		return fmt.Errorf("deliver %q: endpoint %w", ep.connID, rdma.ErrClosed)
	}
	stale := ep.pending
	ep.pending = ch
	ep.mu.Unlock()
	if stale != nil {
		_ = stale.Close()
	}
	ep.table.accepted.Add(1)
	select {
	case ep.ready <- struct{}{}:
	default:
	}
	return nil
}

// Cancel gives the reservation up (the setup failed).
func (tk *Ticket) Cancel() {
	ep := tk.ep
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if !tk.done {
		tk.done = true
		ep.reserved = false
	}
}
