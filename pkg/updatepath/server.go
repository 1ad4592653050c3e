package updatepath

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tether-mesh/tether/pkg/chain"
)

type server struct {
	name string
	opts options
}

// NewServer returns the server element of the hop named name.
func NewServer(name string, opts ...Option) chain.ServerElement {
	return &server{name: name, opts: newOptions(opts)}
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	caller, err := enter(conn, s.name, timestamppb.New(s.opts.now().Add(s.opts.lifetime)))
	if err != nil {
		return nil, err
	}
	sent, own := conn.GetPath(), conn.GetPath().GetIndex()
	resp, err := next.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	remember(ctx, resp, sent, own)
	leave(resp, sent, caller)
	return resp, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if err := closing(ctx, conn, s.name); err != nil {
		return nil, err
	}
	return next.Close(ctx, conn)
}

type client struct {
	name string
	opts options
}

// NewClient returns the client element of the hop named name.
func NewClient(name string, opts ...Option) chain.ClientElement {
	return &client{name: name, opts: newOptions(opts)}
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	if req.GetConnection() == nil {
		req.Connection = &networkservice.Connection{}
	}
	conn := req.GetConnection()
	caller, err := enter(conn, c.name, timestamppb.New(c.opts.now().Add(c.opts.lifetime)))
	if err != nil {
		return nil, err
	}
	sent, own := conn.GetPath(), conn.GetPath().GetIndex()
	resp, err := next.Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	remember(ctx, resp, sent, own)
	leave(resp, sent, caller)
	return resp, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if err := closing(ctx, conn, c.name); err != nil {
		return nil, err
	}
	return next.Close(ctx, conn, opts...)
}
