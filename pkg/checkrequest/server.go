package checkrequest

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

type server struct {
	limits Limits
}

// NewServer returns the request-checking element, with DefaultLimits changed
// by opts.
func NewServer(opts ...Option) chain.ServerElement {
	s := &server{limits: DefaultLimits}
	for _, o := range opts {
		o(&s.limits)
	}
	return s
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	if err := s.limits.CheckRequest(req); err != nil {
		return nil, err
	}
	return next.Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if err := s.limits.CheckClose(conn); err != nil {
		return nil, err
	}
	return next.Close(ctx, conn)
}
