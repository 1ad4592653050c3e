package refcount

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// openKey marks, in a connection's metadata, that its first Request went
// through.
var openKey = chain.NewKey[struct{}]("refcount.open")

type server struct{}

// NewServer returns the element that guards a connection's lifetime: the
// first successful Request opens the connection, refreshes do not count
// again, and Close goes down the chain exactly once: a second Close, or a
// Close for a connection never opened, returns success at once.
func NewServer() chain.ServerElement {
	return &server{}
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	conn, err := next.Request(ctx, req)
	if err == nil {
		openKey.Store(ctx, struct{}{})
	}
	return conn, err
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if _, open := openKey.LoadAndDelete(ctx); !open {
		return new(emptypb.Empty), nil
	}
	return next.Close(ctx, conn)
}
