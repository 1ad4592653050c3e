package viewrefresh_test

import (
	"context"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/clienturl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

// dial stands for connect: it reports where each request goes.
type dial struct {
	sent chan string
}

func (d dial) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	d.sent <- fmt.Sprintf("%s -> %s (%s)", req.GetConnection().GetId(), clienturl.ClientURL(ctx), req.GetConnection().GetNetworkServiceEndpointName())
	return req.GetConnection(), nil
}

func (d dial) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func ExampleNewServer() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()

	// Two members of group "kv" publish their endpoint chains.
	primary, _ := p.Join(ctx, "kv", view.Member{ID: "kv-0", Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/kv-0.sock"}})
	_, _ = p.Join(ctx, "kv", view.Member{ID: "kv-1", Endpoints: map[string]string{view.EndpointGRPC: "tcp://10.0.0.2:5001"}})

	d := dial{sent: make(chan string, 4)}
	srv := chain.NewServer(viewrefresh.NewServer(ctx, p, viewrefresh.WithPolicy(viewrefresh.Primary)), chain.Tail(d))
	conn, _ := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "kv"}})
	fmt.Println(<-d.sent)
	fmt.Println("routed to", conn.GetNetworkServiceEndpointName())

	// The primary leaves: the element moves the connection by itself.
	_ = primary.Leave(ctx)
	fmt.Println(<-d.sent)
	_, _ = srv.Close(ctx, conn)
	// Output:
	// conn-1 -> unix:///run/kv-0.sock (kv-0)
	// routed to kv-0
	// conn-1 -> tcp://10.0.0.2:5001 (kv-1)
}
