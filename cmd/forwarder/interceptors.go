package main

import (
	"context"
	"sync"

	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/metrics"
	pb "github.com/tether-mesh/tether/pkg/view/membershippb"
)

// inflight counts the unary calls being handled, so that a graceful stop
// can wait for them before it cuts the streams that never end on their own
// (monitor subscriptions, health watches).
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n reaches zero, while someone waits
}

func (f *inflight) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		f.mu.Lock()
		f.n++
		f.mu.Unlock()
		defer f.done()
		return handler(ctx, req)
	}
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// wait returns when no unary call is being handled, or when ctx ends.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trackJoins reports the groups of the members joined through the
// membership service (tether_view_* metrics) while their sessions last.
// The embedded provider cannot list its groups; a session's first message
// names its group.
func trackJoins(v *metrics.Views) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != pb.Membership_Join_FullMethodName {
			return handler(srv, ss)
		}
		s := &joinStream{ServerStream: ss, views: v}
		defer s.release()
		return handler(srv, s)
	}
}

type joinStream struct {
	grpc.ServerStream
	views   *metrics.Views
	untrack func()
}

func (s *joinStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.untrack == nil {
		if req, ok := m.(*pb.JoinRequest); ok && req.GetJoin() != nil {
			s.untrack = s.views.Track(req.GetJoin().GetGroup())
		}
	}
	return err
}

func (s *joinStream) release() {
	if s.untrack != nil {
		s.untrack()
	}
}
