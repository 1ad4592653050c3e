package monitor

import (
	"context"
	"strings"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// DefaultQueueSize is how many events a subscriber may have waiting before
// it is disconnected.
const DefaultQueueSize = 1024

// MaxSelectorSegments bounds the path segments of a subscriber's selector.
const MaxSelectorSegments = 64

// Server is the monitor element and the MonitorConnection service it feeds.
type Server interface {
	chain.ServerElement
	networkservice.MonitorConnectionServer
	// Subscribers returns how many subscribers are connected.
	Subscribers() int
}

// Option configures NewServer.
type Option func(*server)

// WithQueueSize sets the per-subscriber queue (default DefaultQueueSize).
func WithQueueSize(n int) Option {
	return func(s *server) { s.queueSize = max(n, 1) }
}

type server struct {
	queueSize int

	mu    sync.Mutex
	conns map[string]*networkservice.Connection // the last state of every open connection
	subs  map[*subscriber]struct{}
}

// subscriber is one MonitorConnections stream.
type subscriber struct {
	selector *networkservice.MonitorScopeSelector
	events   chan *networkservice.ConnectionEvent
	behind   chan struct{} // closed when the queue overflowed
}

// idKey keeps the key a connection's events carry, for its Close.
var idKey = chain.NewKey[string]("monitor")

// NewServer returns the monitor element and service.
func NewServer(opts ...Option) Server {
	s := &server{queueSize: DefaultQueueSize, conns: map[string]*networkservice.Connection{}, subs: map[*subscriber]struct{}{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	resp, err := next.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	snapshot := redact(resp.Clone())
	if old, ok := idKey.Load(ctx); ok && old != snapshot.GetId() {
		s.publish(networkservice.ConnectionEventType_DELETE, old, nil)
	}
	idKey.Store(ctx, snapshot.GetId())
	s.publish(networkservice.ConnectionEventType_UPDATE, snapshot.GetId(), snapshot)
	return resp, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if id, ok := idKey.LoadAndDelete(ctx); ok {
		s.mu.Lock()
		last := s.conns[id]
		s.mu.Unlock()
		s.publish(networkservice.ConnectionEventType_DELETE, id, last)
	}
	return next.Close(ctx, conn)
}

// publish records a connection's new state (nil for a DELETE without one)
// and queues the event for every subscriber whose selector matches it.
func (s *server) publish(typ networkservice.ConnectionEventType, id string, conn *networkservice.Connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if typ == networkservice.ConnectionEventType_DELETE {
		if conn == nil {
			conn = s.conns[id]
		}
		delete(s.conns, id)
	} else {
		s.conns[id] = conn
	}
	if conn == nil {
		conn = &networkservice.Connection{Id: id}
	}
	var ev *networkservice.ConnectionEvent // shared, read-only, by every subscriber
	for sub := range s.subs {
		if !conn.MatchesMonitorScopeSelector(sub.selector) {
			continue
		}
		if ev == nil {
			ev = &networkservice.ConnectionEvent{Type: typ, Connections: map[string]*networkservice.Connection{id: conn}}
		}
		select {
		case sub.events <- ev:
		default:
			close(sub.behind)
			delete(s.subs, sub)
		}
	}
}

// redact hides the secrets a connection's mechanism carries (the channel
// secret of pkg/rdma, tokens): a subscriber learns that the connection
// changed, and its owner gets the new parameters by refreshing it.
func redact(conn *networkservice.Connection) *networkservice.Connection {
	for k := range conn.GetMechanism().GetParameters() {
		if secretKey(k) {
			conn.GetMechanism().GetParameters()[k] = "<redacted>"
		}
	}
	return conn
}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "secret") || strings.Contains(k, "token") || strings.Contains(k, "password")
}

func (s *server) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func (s *server) MonitorConnections(selector *networkservice.MonitorScopeSelector, stream networkservice.MonitorConnection_MonitorConnectionsServer) error {
	if n := len(selector.GetPathSegments()); n > MaxSelectorSegments {
		return status.Errorf(codes.InvalidArgument, "monitor: selector has %d path segments, more than the limit of %d", n, MaxSelectorSegments)
	}
	sub := &subscriber{selector: selector, events: make(chan *networkservice.ConnectionEvent, s.queueSize), behind: make(chan struct{})}
	initial := &networkservice.ConnectionEvent{Type: networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, Connections: map[string]*networkservice.Connection{}}
	s.mu.Lock()
	for id, conn := range s.conns {
		if conn.MatchesMonitorScopeSelector(selector) {
			initial.Connections[id] = conn
		}
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()

	if err := stream.Send(initial); err != nil {
		return err
	}
	for {
		select {
		case ev := <-sub.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.behind:
			return status.Errorf(codes.ResourceExhausted, "monitor: subscriber fell %d events behind and was disconnected; subscribe again to receive the full state", s.queueSize)
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		}
	}
}
