package viewrefresh_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

type benchTail struct{}

func (benchTail) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (benchTail) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// benchGroup is a provider with a group of n members, each with a gRPC
// endpoint and labels.
func benchGroup(b *testing.B, n int) *embedded.Provider {
	b.Helper()
	p := embedded.New()
	b.Cleanup(func() { _ = p.Close() })
	for i := range n {
		id := fmt.Sprintf("member-%03d", i)
		_, err := p.Join(context.Background(), "g", view.Member{
			ID:        id,
			Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/tether/" + id + ".sock", "shm": "/dev/shm/" + id},
			Labels:    map[string]string{"zone": fmt.Sprint("z", i%4), "role": "replica"},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// inEvent runs body inside a chain event, where the element's metadata
// lives, so that a benchmark calls the element alone, without the chain
// head's own cost.
func inEvent(b *testing.B, body func(ctx context.Context)) {
	b.Helper()
	srv := chain.NewServer(chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
		body(ctx)
		return req.GetConnection(), nil
	}})
	if _, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "bench"}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRequest is a refresh of a connection routed to a member of a
// 100-member view: the path every Request of an established connection
// takes. "element" calls the element alone (next is a plain server);
// "chain" goes through a whole chain with its head.
func BenchmarkRequest(b *testing.B) {
	for _, policy := range []viewrefresh.Policy{viewrefresh.Primary, viewrefresh.Rendezvous, viewrefresh.LeastConnections} {
		for _, selector := range []string{"", "zone=z1,role=replica"} {
			name := fmt.Sprintf("members=100/policy=%s/selector=%v", policy, selector != "")
			b.Run("element/"+name, func(b *testing.B) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				el := viewrefresh.NewServer(ctx, benchGroup(b, 100), viewrefresh.WithPolicy(policy))
				next := chain.ServerAsNext(benchTail{})
				req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "bench", NetworkService: "g", Labels: map[string]string{viewrefresh.SelectorLabel: selector}}}
				if selector == "" {
					req.Connection.Labels = nil
				}
				inEvent(b, func(ctx context.Context) {
					if _, err := el.Request(ctx, req, next); err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					for b.Loop() {
						if _, err := el.Request(ctx, req, next); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
	b.Run("chain/members=100", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := chain.NewServer(viewrefresh.NewServer(ctx, benchGroup(b, 100)), chain.Tail(benchTail{}))
		req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "bench", NetworkService: "g"}}
		if _, err := srv.Request(ctx, req); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := srv.Request(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSelect is a request that selects anew (an empty member name, as
// heal's reselect sends) in a 100-member view, for each policy.
func BenchmarkSelect(b *testing.B) {
	for _, policy := range []viewrefresh.Policy{viewrefresh.Primary, viewrefresh.Rendezvous, viewrefresh.LeastConnections} {
		b.Run(fmt.Sprintf("members=100/policy=%s", policy), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			el := viewrefresh.NewServer(ctx, benchGroup(b, 100), viewrefresh.WithPolicy(policy))
			next := chain.ServerAsNext(benchTail{})
			req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "bench", NetworkService: "g"}}
			inEvent(b, func(ctx context.Context) {
				b.ReportAllocs()
				for b.Loop() {
					req.Connection.NetworkServiceEndpointName = ""
					if _, err := el.Request(ctx, req, next); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
