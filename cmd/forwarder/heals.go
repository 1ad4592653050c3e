package main

import (
	"context"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/view"
)

// The causes of a heal, the values of the cause label.
const (
	// healByView: view refresh moved the connection on its own, re-entering
	// the chain after a view without the connection's member arrived.
	healByView = "view"
	// healByClient: a Request from the connection's client moved it (its
	// heal's reselect, or a refresh that found its member gone).
	healByClient = "client"
)

// requestMethod is the gRPC method of a connection Request.
const requestMethod = "/networkservice.NetworkService/Request"

// departureMemory is how long the forwarder remembers when a member left,
// to time the moves of its connections (view refresh moves them within its
// reselect timeout, 30 s).
const departureMemory = 2 * time.Minute

// healTracker counts the forwarder's heals.
//
// A heal is a Request event, on a connection the forwarder already holds,
// after which the connection is bound to another member than after its
// previous Request (NetworkServiceEndpointName changed, both not empty). It
// is seen on the forwarder's own MonitorConnection stream, which carries an
// UPDATE for every Request event, re-entries included, in order.
//
// Its duration is
//   - for cause "view", from the moment the forwarder received the view
//     without the old member to the moved connection's UPDATE: the
//     re-request and the wait for a reselect worker;
//   - for cause "client", from the arrival of the client's Request at the
//     forwarder to its UPDATE: the re-request through the chain, with the
//     dial of the new member.
//
// It keeps the member of every open connection (its ID and the member's
// name, shared with the view), when a view removed each member in the last
// two minutes, and the client Requests in flight.
type healTracker struct {
	heals *metrics.Heals
	log   *logrus.Entry
	now   func() time.Time

	mu sync.Mutex
	// departed is when the forwarder received the view that removed a
	// member of a group.
	departed map[departure]time.Time
	// pending is when the client Request in flight for a connection (by
	// the client's ID) arrived; its UPDATE takes it.
	pending map[string]time.Time

	// members is the member of each connection (by the forwarder's ID) as
	// of its last UPDATE; only the subscriber goroutine uses it.
	members map[string]string
}

type departure struct {
	group, member string
}

func newHealTracker(heals *metrics.Heals, log *logrus.Entry) *healTracker {
	return &healTracker{
		heals: heals, log: log, now: time.Now,
		departed: map[departure]time.Time{},
		pending:  map[string]time.Time{},
		members:  map[string]string{},
	}
}

// Provider returns p wrapped so that the tracker learns when each member
// left: the forwarder's view refresh watches through it.
func (h *healTracker) Provider(p view.Provider) view.Provider {
	return &departureProvider{Provider: p, h: h}
}

type departureProvider struct {
	view.Provider
	h *healTracker
}

func (p *departureProvider) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	w, err := p.Provider.Watch(ctx, group, after)
	if err != nil {
		return nil, err
	}
	return &departureWatcher{Watcher: w, h: p.h}, nil
}

type departureWatcher struct {
	view.Watcher
	h *healTracker
}

func (w *departureWatcher) Next(ctx context.Context) (view.View, error) {
	v, err := w.Watcher.Next(ctx)
	if err == nil && len(v.Left) > 0 {
		w.h.left(v.Group, v.Left)
	}
	return v, err
}

func (h *healTracker) left(group string, members []view.Member) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for d, at := range h.departed {
		if now.Sub(at) > departureMemory {
			delete(h.departed, d)
		}
	}
	for _, m := range members {
		h.departed[departure{group, m.ID}] = now
	}
}

// UnaryServerInterceptor notes when each client Request arrives, until its
// UPDATE or its failure.
func (h *healTracker) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		r, ok := req.(*networkservice.NetworkServiceRequest)
		if !ok || info.FullMethod != requestMethod || r.GetConnection().GetId() == "" {
			return handler(ctx, req)
		}
		id, start := r.GetConnection().GetId(), h.now()
		h.mu.Lock()
		_, busy := h.pending[id]
		if !busy {
			h.pending[id] = start
		}
		h.mu.Unlock()
		resp, err := handler(ctx, req)
		if err != nil && !busy {
			h.mu.Lock()
			if at, ok := h.pending[id]; ok && at.Equal(start) {
				delete(h.pending, id)
			}
			h.mu.Unlock()
		}
		return resp, err
	}
}

// run follows the monitor's events until ctx ends, subscribing again when
// the monitor drops the subscription (it fell behind): the initial state
// then brings every connection's member up to date.
func (h *healTracker) run(ctx context.Context, mon networkservice.MonitorConnectionServer) {
	delay := 10 * time.Millisecond
	for {
		err := mon.MonitorConnections(&networkservice.MonitorScopeSelector{}, &eventStream{ctx: ctx, h: h})
		if ctx.Err() != nil {
			return
		}
		h.log.WithError(err).Warn("heal metrics: the monitor subscription ended; subscribing again")
		if status.Code(err) == codes.ResourceExhausted {
			continue
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

func (h *healTracker) handle(ev *networkservice.ConnectionEvent) {
	now := h.now()
	switch ev.GetType() {
	case networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER:
		clear(h.members)
		for id, conn := range ev.GetConnections() {
			h.members[id] = conn.GetNetworkServiceEndpointName()
		}
		h.mu.Lock()
		for id, at := range h.pending { // left by events the dropped subscription missed
			if now.Sub(at) > departureMemory {
				delete(h.pending, id)
			}
		}
		h.mu.Unlock()
	case networkservice.ConnectionEventType_UPDATE:
		for id, conn := range ev.GetConnections() {
			member := conn.GetNetworkServiceEndpointName()
			old, known := h.members[id]
			h.members[id] = member
			group := conn.GetNetworkService()
			h.mu.Lock()
			clientID := clientIDOf(id, conn)
			started, byClient := h.pending[clientID]
			delete(h.pending, clientID)
			left, byView := h.departed[departure{group, old}]
			h.mu.Unlock()
			if !known || old == "" || member == "" || old == member {
				continue
			}
			cause, took := healByView, time.Duration(0)
			switch {
			case byClient:
				cause, took = healByClient, now.Sub(started)
			case byView:
				took = now.Sub(left)
			}
			h.heals.Observe(cause, took)
			h.log.WithFields(logrus.Fields{"conn_id": id, "group": group, "from": old, "to": member, "cause": cause, "took": took}).Info("connection healed")
		}
	case networkservice.ConnectionEventType_DELETE:
		for id, conn := range ev.GetConnections() {
			delete(h.members, id)
			h.mu.Lock()
			delete(h.pending, clientIDOf(id, conn))
			h.mu.Unlock()
		}
	}
}

// clientIDOf returns the ID the forwarder's client knows connection id by:
// the ID of the path segment before the forwarder's, or its own when the
// forwarder is the first hop.
func clientIDOf(id string, conn *networkservice.Connection) string {
	if prev := conn.GetPrevPathSegment(); prev.GetId() != "" {
		return prev.GetId()
	}
	return id
}

// eventStream delivers the monitor's events to the tracker in the
// subscriber's goroutine.
type eventStream struct {
	ctx context.Context
	h   *healTracker
}

func (s *eventStream) Send(ev *networkservice.ConnectionEvent) error {
	s.h.handle(ev)
	return nil
}

func (s *eventStream) Context() context.Context     { return s.ctx }
func (s *eventStream) SetHeader(metadata.MD) error  { return nil }
func (s *eventStream) SendHeader(metadata.MD) error { return nil }
func (s *eventStream) SetTrailer(metadata.MD)       {}
func (s *eventStream) SendMsg(m any) error {
	if ev, ok := m.(*networkservice.ConnectionEvent); ok {
		return s.Send(ev)
	}
	return status.Errorf(codes.Internal, "unexpected message %T", m)
}
func (s *eventStream) RecvMsg(any) error {
	return status.Error(codes.Unimplemented, "a monitor stream receives nothing")
}
