package viewrefresh

import (
	"context"
	"fmt"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
)

// BenchmarkRoute is the part of a refresh that reads the current view of a
// 100-member group and decides where the connection goes (it stays on its
// member): the element's Request without recording on the connection,
// setting the next hop (clienturl.SetClientURL) and calling next. It must
// not allocate.
func BenchmarkRoute(b *testing.B) {
	for _, selector := range []string{"", "zone=z1,role=replica"} {
		b.Run(fmt.Sprintf("members=100/selector=%v", selector != ""), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := embedded.New()
			defer p.Close()
			for i := range 100 {
				id := fmt.Sprintf("member-%03d", i)
				if _, err := p.Join(ctx, "g", view.Member{ID: id, Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/" + id}, Labels: map[string]string{"zone": fmt.Sprint("z", i%4), "role": "replica"}}); err != nil {
					b.Fatal(err)
				}
			}
			s := NewServer(ctx, p).(*server)
			conn := &networkservice.Connection{Id: "bench", NetworkService: "g"}
			if selector != "" {
				conn.Labels = map[string]string{SelectorLabel: selector}
			}
			srv := chain.NewServer(chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
				if _, err := s.Request(ctx, req, chain.ServerAsNext(okTail{})); err != nil {
					return nil, err
				}
				b.ReportAllocs()
				for b.Loop() {
					r, err := s.route(ctx, req.GetConnection())
					if err != nil || r.acquired || r.snap.v.Members[r.rank].ID != req.GetConnection().GetNetworkServiceEndpointName() {
						b.Fatalf("route %+v, %v", r, err)
					}
				}
				return req.GetConnection(), nil
			}})
			if _, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestRouteDoesNotAllocate pins BenchmarkRoute's result in the tests.
func TestRouteDoesNotAllocate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()
	for i := range 100 {
		id := fmt.Sprintf("member-%03d", i)
		if _, err := p.Join(ctx, "g", view.Member{ID: id, Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/" + id}, Labels: map[string]string{"zone": "a"}}); err != nil {
			t.Fatal(err)
		}
	}
	s := NewServer(ctx, p, WithPolicy(Rendezvous)).(*server)
	srv := chain.NewServer(chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
		if _, err := s.Request(ctx, req, chain.ServerAsNext(okTail{})); err != nil {
			return nil, err
		}
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := s.route(ctx, req.GetConnection()); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("route allocates %v times per call", allocs)
		}
		// The whole element allocates nothing either.
		next := chain.ServerAsNext(okTail{})
		allocs = testing.AllocsPerRun(1000, func() {
			if _, err := s.Request(ctx, req, next); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Request allocates %v times per call, want 0", allocs)
		}
		return req.GetConnection(), nil
	}})
	conn := &networkservice.Connection{Id: "c", NetworkService: "g", Labels: map[string]string{SelectorLabel: "zone=a"}}
	if _, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
		t.Fatal(err)
	}
}
