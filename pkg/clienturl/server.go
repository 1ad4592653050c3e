package clienturl

import (
	"context"
	"net/url"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

type server struct {
	u *url.URL
}

// NewServer returns an element that sends every connection to u: the
// elements after it see u as ClientURL (recorded with SetClientURL). u is
// not copied; do not change it afterwards.
func NewServer(u *url.URL) chain.ServerElement {
	return &server{u: u}
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	SetClientURL(ctx, s.u)
	return next.Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	SetClientURL(ctx, s.u)
	return next.Close(ctx, conn)
}
