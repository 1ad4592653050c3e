package rdma

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// DefaultAttachTimeout is how long a connection's endpoint waits for its
// client to attach a channel, first and after a channel broke.
const DefaultAttachTimeout = 10 * time.Second

// ChannelHandler serves one channel of a connection: it returns when the
// channel ended or ctx ended (the connection was closed). The element closes
// the channel afterwards.
type ChannelHandler func(ctx context.Context, ch Channel)

// ServerOption configures NewServer.
type ServerOption func(*serverOptions)

type serverOptions struct {
	listeners     map[string]Listener
	order         []string
	attachTimeout time.Duration
	handler       ChannelHandler
	log           *logrus.Entry
}

// WithListener serves the provider's channels on l. The endpoint offers its
// providers in the order of these options.
func WithListener(provider string, l Listener) ServerOption {
	return func(o *serverOptions) {
		if _, ok := o.listeners[provider]; !ok {
			o.order = append(o.order, provider)
		}
		o.listeners[provider] = l
	}
}

// WithAttachTimeout sets how long an endpoint waits for its client's channel
// (default DefaultAttachTimeout). A connection whose client does not attach
// in time, or does not come back in time after its channel broke, is closed
// from the start of the chain.
func WithAttachTimeout(d time.Duration) ServerOption {
	return func(o *serverOptions) { o.attachTimeout = d }
}

// WithChannelHandler sets what serves an attached channel (the default reads
// and discards its messages).
func WithChannelHandler(h ChannelHandler) ServerOption {
	return func(o *serverOptions) { o.handler = h }
}

// WithServerLogger sets the logger.
func WithServerLogger(log *logrus.Entry) ServerOption {
	return func(o *serverOptions) { o.log = log }
}

// endpoint is a connection's binding at the terminal element.
type endpoint struct {
	ep       Endpoint
	provider string
	mech     *networkservice.Mechanism
	cancel   context.CancelFunc
}

var endpointKey = chain.NewKey[*endpoint]("rdma.endpoint")

type server struct {
	opts serverOptions
}

// NewServer returns the terminal element of a member's endpoint chain: it
// picks the first mechanism preference of type MechanismType whose provider
// it has a listener for (a LOCAL preference only from its own process or
// host, see ParamLocality), expects a channel for the connection ID with a
// fresh secret, and answers with the Binding as the connection's mechanism.
// A refresh answers with the same binding and allocates nothing, unless its
// preferences no longer offer the bound provider (a client that could not
// open the channel offers the others): then it binds anew and releases the
// old endpoint, as NSM's endpoints choose a mechanism again. Close tears
// the channel down. No usable preference fails with FailedPrecondition
// naming what the endpoint supports.
func NewServer(opts ...ServerOption) chain.ServerElement {
	s := &server{opts: serverOptions{
		listeners:     map[string]Listener{},
		attachTimeout: DefaultAttachTimeout,
		handler:       drain,
		log:           logrus.NewEntry(logrus.StandardLogger()),
	}}
	for _, o := range opts {
		o(&s.opts)
	}
	return s
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	old, refresh := endpointKey.Load(ctx)
	if refresh && s.keeps(req.GetMechanismPreferences(), old.provider) { // the same binding
		conn.Mechanism = old.mech
		return next.Request(ctx, req)
	}
	provider, err := s.choose(req.GetMechanismPreferences())
	if err != nil {
		return nil, err
	}
	l := s.opts.listeners[provider]
	secret := NewSecret()
	ep, err := l.Expect(conn.GetId(), secret)
	switch {
	case errors.Is(err, ErrAlreadyExpected):
		return nil, status.Errorf(codes.AlreadyExists, "rdma: connection %q already has a channel endpoint", conn.GetId())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "rdma: expect a %s channel for %q: %v", provider, conn.GetId(), err)
	}
	mech := Binding{Provider: provider, Address: l.Addr(), ConnID: conn.GetId(), Secret: secret}.Mechanism()
	conn.Mechanism = mech
	resp, err := next.Request(ctx, req)
	if err != nil {
		_ = ep.Close()
		return nil, err
	}
	h, _ := chain.Reentry(ctx)
	watchCtx, cancel := context.WithCancel(context.Background()) // the connection outlives the request
	e := &endpoint{ep: ep, provider: provider, mech: mech, cancel: cancel}
	endpointKey.Store(ctx, e)
	go s.watch(watchCtx, h, e) //nolint:contextcheck // the watch lives as long as the connection, not the request
	if refresh {
		s.opts.log.WithFields(logrus.Fields{"conn_id": conn.GetId(), "provider": provider, "was": old.provider}).
			Info("rdma: the client no longer offers the bound provider; bound anew")
		// The watch's context first, so that it leaves quietly when the
		// endpoint closes (a client that could not open the channel has
		// none attached).
		old.cancel()
		_ = old.ep.Close()
	}
	return resp, nil
}

// keeps reports whether a refresh with prefs keeps a binding with
// provider: when prefs still offer it usably, or offer no RDMA mechanism at
// all (a refresh without preferences). It allocates nothing.
func (s *server) keeps(prefs []*networkservice.Mechanism, provider string) bool {
	offered := false
	for _, m := range prefs {
		if m.GetType() != MechanismType {
			continue
		}
		offered = true
		if p, ok := s.usable(m); ok && p == provider {
			return true
		}
	}
	return !offered
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if e, ok := endpointKey.LoadAndDelete(ctx); ok {
		_ = e.ep.Close() // the channel first: a handler stopped by the cancel cannot answer on it
		e.cancel()
	}
	return next.Close(ctx, conn)
}

// choose returns the provider of the first usable preference.
func (s *server) choose(prefs []*networkservice.Mechanism) (string, error) {
	for _, m := range prefs {
		if p, ok := s.usable(m); ok {
			return p, nil
		}
	}
	return "", status.Errorf(codes.FailedPrecondition, "rdma: no usable mechanism: this endpoint supports %s with providers %s; the request offered %s",
		MechanismType, s.supported(), describePreferences(prefs))
}

// usable returns the provider of preference m if this endpoint can serve
// it: a mechanism of type MechanismType, a provider it listens for, and a
// class that fits the provider's scope (LOCAL from the same process or
// host, by the locality token; REMOTE for the others).
func (s *server) usable(m *networkservice.Mechanism) (string, bool) {
	if m.GetType() != MechanismType {
		return "", false
	}
	p := m.GetParameters()[ParamProvider]
	if _, ok := s.opts.listeners[p]; !ok {
		return "", false
	}
	scope := ProviderScope(p)
	switch m.GetCls() {
	case cls.LOCAL:
		// Another process or host cannot reach a scoped provider.
		return p, scope == ScopeAny || m.GetParameters()[ParamLocality] == Locality(scope)
	case cls.REMOTE:
		return p, scope == ScopeAny
	}
	return "", false
}

func (s *server) supported() string {
	var out []string
	for _, p := range s.opts.order {
		switch ProviderScope(p) {
		case ScopeProcess:
			out = append(out, p+" (LOCAL, same process)")
		case ScopeHost:
			out = append(out, p+" (LOCAL, same host)")
		default:
			out = append(out, p)
		}
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func describePreferences(prefs []*networkservice.Mechanism) string {
	out := make([]string, 0, len(prefs))
	for _, m := range prefs {
		out = append(out, fmt.Sprintf("%s/%s/%s", m.GetType(), m.GetCls(), m.GetParameters()[ParamProvider]))
	}
	if len(out) == 0 {
		return "nothing"
	}
	slices.Sort(out)
	return "[" + strings.Join(out, ", ") + "]"
}

// watch serves the connection's channels: it waits for the client to
// attach, hands the channel to the handler, and after the channel ended
// waits again. When the client does not attach within the attach timeout,
// the connection is closed from the start of the chain.
func (s *server) watch(ctx context.Context, h chain.Handle, e *endpoint) {
	log := s.opts.log.WithField("conn_id", e.ep.ConnID())
	for {
		attachCtx, cancel := context.WithTimeout(ctx, s.opts.attachTimeout)
		ch, err := e.ep.Accept(attachCtx)
		cancel()
		if ctx.Err() != nil { // the connection was closed
			if ch != nil {
				_ = ch.Close()
			}
			return
		}
		if err != nil {
			log.WithError(err).Info("rdma: no channel attached in time; closing the connection")
			s.release(h, e) //nolint:contextcheck // ctx has ended; closing the connection needs its own
			return
		}
		s.opts.handler(ctx, ch)
		_ = ch.Close()
		if ctx.Err() != nil {
			return
		}
		log.WithError(ch.Err()).Debug("rdma: channel ended; waiting for the client to attach again")
	}
}

// release closes the connection if e is still its endpoint.
func (s *server) release(h chain.Handle, e *endpoint) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.attachTimeout)
	defer cancel()
	if _, err := h.CloseIf(ctx, func(ctx context.Context) bool {
		cur, _ := endpointKey.Load(ctx)
		return cur == e
	}); err != nil {
		s.opts.log.WithError(err).WithField("conn_id", e.ep.ConnID()).Warn("rdma: closing an abandoned connection failed")
	}
}

// drain reads and discards a channel's messages, so that a client of an
// endpoint without a handler is never stalled by flow control.
func drain(ctx context.Context, ch Channel) {
	var m Message
	for ch.Recv(ctx, &m) == nil {
	}
}
