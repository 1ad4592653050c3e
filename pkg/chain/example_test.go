package chain_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/checkrequest"
)

// stamp is an element: it labels every connection with its name.
type stamp struct{ name string }

func (s *stamp) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	if conn.Labels == nil {
		conn.Labels = map[string]string{}
	}
	conn.Labels["via"] += s.name + " "
	return next.Request(ctx, req)
}

func (s *stamp) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	return next.Close(ctx, conn)
}

// requests is per-connection state kept in the chain's metadata store.
var requests = chain.NewKey[*int]("example-requests")

// countRequests counts the requests of each connection.
func countRequests() chain.ServerElement {
	return chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
		n, _ := requests.LoadOrStore(ctx, new(int))
		*n++
		fmt.Printf("request %d for %s\n", *n, req.GetConnection().GetId())
		return next.Request(ctx, req)
	}}
}

func ExampleNewServer() {
	srv := chain.NewServer(
		checkrequest.NewServer(),
		&stamp{name: "a"},
		chain.Server(&stamp{name: "b"}, countRequests()), // a group nests flat
	)
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1"}}
	conn, _ := srv.Request(context.Background(), req)
	fmt.Printf("via: %s\n", strings.TrimSpace(conn.GetLabels()["via"]))
	_, _ = srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn})
	_, _ = srv.Close(context.Background(), conn)
	fmt.Println("open connections:", srv.(chain.ConnectionCounter).Connections())
	// Output:
	// request 1 for conn-1
	// via: a b
	// request 2 for conn-1
	// open connections: 0
}
