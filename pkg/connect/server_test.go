package connect_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/clienturl"
	"github.com/tether-mesh/tether/pkg/connect"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// urlKey carries, for the test's forwarder chain, which URL a request goes to.
var urlKey = chain.NewKey[*url.URL]("test-url")

// route sends a connection to the URL in its "to" label, remembered across
// refreshes and Close as a real selection element would.
type route struct {
	urls map[string]*url.URL
}

func (r *route) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	u := r.urls[req.GetConnection().GetLabels()["to"]]
	urlKey.Store(ctx, u)
	return next.Request(clienturl.WithClientURL(ctx, u), req)
}

func (r *route) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	u, _ := urlKey.Load(ctx)
	return next.Close(clienturl.WithClientURL(ctx, u), conn)
}

// tailLedger records what passes connect on its way down the server chain.
type tailLedger struct {
	mu     sync.Mutex
	closes map[string]int
}

func (l *tailLedger) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	return next.Request(ctx, req)
}

func (l *tailLedger) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	l.mu.Lock()
	l.closes[conn.GetId()]++
	l.mu.Unlock()
	return next.Close(ctx, conn)
}

type forwarder struct {
	srv     networkservice.NetworkServiceServer
	connect chain.ServerElement
	tail    *tailLedger
}

func newForwarder(endpoints map[string]*endpoint, opts ...connect.Option) *forwarder {
	r := &route{urls: map[string]*url.URL{}}
	for name, e := range endpoints {
		r.urls[name] = e.url
	}
	f := &forwarder{connect: connect.NewServer(append([]connect.Option{connect.WithDialTimeout(2 * time.Second)}, opts...)...), tail: &tailLedger{closes: map[string]int{}}}
	f.srv = chain.NewServer(r, f.connect, f.tail)
	return f
}

func (f *forwarder) clientConns() int {
	return f.connect.(connect.ClientCounter).ClientConns()
}

func (f *forwarder) connections() int {
	return f.srv.(chain.ConnectionCounter).Connections()
}

func requestTo(id, to string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id, Labels: map[string]string{"to": to}}}
}

var networks = []string{"unix", "tcp"}

func TestOneClientConnPerURL(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			eps := map[string]*endpoint{"a": startEndpoint(t, network, ""), "b": startEndpoint(t, network, ""), "c": startEndpoint(t, network, "")}
			f := newForwarder(eps)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout*3)
			defer cancel()

			// 1,000 connections to one URL, opened concurrently.
			var conns sync.Map
			var wg sync.WaitGroup
			for w := range 10 {
				wg.Go(func() {
					for i := range 100 {
						id := fmt.Sprintf("a-%d-%d", w, i)
						conn, err := f.srv.Request(ctx, requestTo(id, "a"))
						if err != nil {
							t.Error(err)
							return
						}
						if conn.GetPayload() != "served" {
							t.Errorf("response %v did not come from the endpoint", conn)
						}
						conns.Store(id, conn)
					}
				})
			}
			wg.Wait()
			if f.clientConns() != 1 || eps["a"].lis.accepted.Load() != 1 {
				t.Fatalf("1,000 connections to one URL use %d client connections (%d accepted)", f.clientConns(), eps["a"].lis.accepted.Load())
			}
			if open, _, _ := eps["a"].ledger.counts(); open != 1000 {
				t.Fatalf("endpoint holds %d connections, want 1000", open)
			}
			// Refreshes reuse the connection.
			conns.Range(func(_, v any) bool {
				if _, err := f.srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: v.(*networkservice.Connection)}); err != nil {
					t.Error(err)
				}
				return true
			})
			// Connections to three URLs use three.
			for _, to := range []string{"b", "c"} {
				for i := range 10 {
					id := fmt.Sprintf("%s-%d", to, i)
					conn, err := f.srv.Request(ctx, requestTo(id, to))
					if err != nil {
						t.Fatal(err)
					}
					conns.Store(id, conn)
				}
			}
			if f.clientConns() != 3 {
				t.Fatalf("three URLs use %d client connections", f.clientConns())
			}
			conns.Range(func(_, v any) bool {
				if _, err := f.srv.Close(ctx, v.(*networkservice.Connection)); err != nil {
					t.Error(err)
				}
				return true
			})
			if f.clientConns() != 0 || f.connections() != 0 {
				t.Fatalf("after every Close: %d client connections, %d chain entries", f.clientConns(), f.connections())
			}
			for name, e := range eps {
				if open, _, closes := e.ledger.counts(); open != 0 || closes == 0 {
					t.Fatalf("endpoint %s: %d connections open, %d closed", name, open, closes)
				}
				e.lis.waitOpen(t, 0)
			}
		})
	}
}

func TestDeadURLLeavesNothing(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			addr := filepath.Join(t.TempDir(), "dead.sock")
			u := &url.URL{Scheme: "unix", Path: addr}
			if network == "tcp" {
				probe := startEndpoint(t, "tcp", "") // take a free port, then free it
				probe.stop()
				addr = probe.addr()
				u = probe.url
			}
			const dialTimeout = 300 * time.Millisecond
			f := &forwarder{connect: connect.NewServer(connect.WithDialTimeout(dialTimeout)), tail: &tailLedger{closes: map[string]int{}}}
			f.srv = chain.NewServer(&route{urls: map[string]*url.URL{"dead": u}}, f.connect, f.tail)
			ctx := context.Background()
			var wg sync.WaitGroup
			for w := range 10 {
				wg.Go(func() {
					for i := range 10 {
						start := time.Now()
						_, err := f.srv.Request(ctx, requestTo(fmt.Sprint("c", w, i), "dead"))
						if status.Code(err) != codes.Unavailable {
							t.Errorf("request to a dead URL: %v, want Unavailable", err)
						}
						if took := time.Since(start); took > dialTimeout+5*time.Second {
							t.Errorf("a request to a dead URL took %v with a dial timeout of %v", took, dialTimeout)
						}
					}
				})
			}
			wg.Wait()
			if f.clientConns() != 0 || f.connections() != 0 {
				t.Fatalf("100 failed requests left %d client connections and %d chain entries", f.clientConns(), f.connections())
			}
			// The same URL brought up is reachable by the next Request.
			e := startEndpoint(t, network, addr)
			conn, err := f.srv.Request(ctx, requestTo("late", "dead"))
			if err != nil {
				t.Fatalf("the URL came up, but: %v", err)
			}
			if _, err := f.srv.Close(ctx, conn); err != nil {
				t.Fatal(err)
			}
			e.lis.waitOpen(t, 0)
			e.stop()
		})
	}
}

func TestServerKilledWhileConnectionsAreOpen(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			e := startEndpoint(t, network, "")
			f := newForwarder(map[string]*endpoint{"a": e}, connect.WithDialTimeout(300*time.Millisecond))
			ctx := context.Background()
			var conns []*networkservice.Connection
			for i := range 20 {
				conn, err := f.srv.Request(ctx, requestTo(fmt.Sprint("c", i), "a"))
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, conn)
			}
			e.stop()
			for _, conn := range conns {
				if _, err := f.srv.Close(ctx, conn); err != nil {
					t.Fatalf("close after the server died: %v", err)
				}
				if f.tail.closes[conn.GetId()] != 1 {
					t.Fatalf("close of %s did not continue down the chain", conn.GetId())
				}
			}
			if f.clientConns() != 0 || f.connections() != 0 {
				t.Fatalf("%d client connections, %d chain entries left", f.clientConns(), f.connections())
			}
		})
	}
}

func TestServerRestartedOnTheSameURL(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			e := startEndpoint(t, network, "")
			f := newForwarder(map[string]*endpoint{"a": e})
			ctx := context.Background()
			conn, err := f.srv.Request(ctx, requestTo("c1", "a"))
			if err != nil {
				t.Fatal(err)
			}
			e.stop()
			again := startEndpoint(t, network, e.addr())
			// The refresh finds the restarted server over the same shared
			// client connection, redialled.
			if conn, err = f.srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
				t.Fatalf("refresh after a restart: %v", err)
			}
			if open, _, _ := again.ledger.counts(); open != 1 {
				t.Fatalf("the restarted server holds %d connections", open)
			}
			if _, err := f.srv.Close(ctx, conn); err != nil {
				t.Fatal(err)
			}
			again.lis.waitOpen(t, 0)
		})
	}
}

func TestCancelRedials(t *testing.T) {
	e := startEndpoint(t, "unix", "")
	cancels := make(chan func(), 4)
	capture := chain.ClientFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
		cancels <- connect.Cancel(ctx)
		return next.Request(ctx, req, opts...)
	}}
	factoryCtxs := make(chan context.Context, 4)
	f := newForwarder(map[string]*endpoint{"a": e}, connect.WithClientFactory(func(ctx context.Context, cc grpc.ClientConnInterface) networkservice.NetworkServiceClient {
		factoryCtxs <- ctx
		return chain.NewClient(capture, chain.ClientTail(networkservice.NewNetworkServiceClient(cc)))
	}))
	ctx := context.Background()
	conn, err := f.srv.Request(ctx, requestTo("c1", "a"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.srv.Request(ctx, requestTo("c2", "a"))
	if err != nil {
		t.Fatal(err)
	}
	cancel := <-cancels
	<-cancels
	urlCtx := <-factoryCtxs
	if cancel == nil || connect.Cancel(ctx) != nil {
		t.Fatal("the cancel function is missing in the client sub-chain, or present outside it")
	}
	cancel()
	if urlCtx.Err() == nil {
		t.Fatal("the URL's context did not end with the cancel")
	}
	if f.clientConns() != 0 {
		t.Fatalf("%d client connections after cancel", f.clientConns())
	}
	e.lis.waitOpen(t, 0)
	// The next Request dials again.
	if conn, err = f.srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
		t.Fatal(err)
	}
	if e.lis.accepted.Load() != 2 || f.clientConns() != 1 {
		t.Fatalf("after cancel: %d dials, %d client connections", e.lis.accepted.Load(), f.clientConns())
	}
	cancel() // the old generation's cancel does not touch the new connection
	if f.clientConns() != 1 {
		t.Fatal("a stale cancel closed the fresh connection")
	}
	for _, c := range []*networkservice.Connection{conn, other} {
		if _, err := f.srv.Close(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if f.clientConns() != 0 || f.connections() != 0 {
		t.Fatalf("%d client connections, %d chain entries left", f.clientConns(), f.connections())
	}
}

func TestMoveToAnotherURL(t *testing.T) {
	a, b := startEndpoint(t, "unix", ""), startEndpoint(t, "tcp", "")
	f := newForwarder(map[string]*endpoint{"a": a, "b": b})
	ctx := context.Background()
	conn, err := f.srv.Request(ctx, requestTo("c1", "a"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Labels["to"] = "b"
	if conn, err = f.srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
		t.Fatal(err)
	}
	// The old URL hears its Close off the Request's path; its connection
	// goes once that is done.
	a.lis.waitOpen(t, 0)
	aOpen, _, aCloses := a.ledger.counts()
	bOpen, _, _ := b.ledger.counts()
	if aOpen != 0 || aCloses != 1 || bOpen != 1 || f.clientConns() != 1 {
		t.Fatalf("after the move: a open %d closed %d, b open %d, %d client connections", aOpen, aCloses, bOpen, f.clientConns())
	}
	if _, err := f.srv.Close(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if f.clientConns() != 0 {
		t.Fatalf("%d client connections left", f.clientConns())
	}
}

func TestConcurrentRequestsAndCloses(t *testing.T) {
	eps := map[string]*endpoint{"a": startEndpoint(t, "unix", ""), "b": startEndpoint(t, "tcp", "")}
	f := newForwarder(eps)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 150 {
				id := fmt.Sprint("c", rng.IntN(24)) // shared IDs: the same ID from many goroutines
				to := []string{"a", "b"}[rng.IntN(2)]
				if rng.IntN(3) == 0 {
					_, _ = f.srv.Close(ctx, &networkservice.Connection{Id: id, Labels: map[string]string{"to": to}})
					continue
				}
				if _, err := f.srv.Request(ctx, requestTo(id, to)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for i := range 24 {
		_, _ = f.srv.Close(ctx, &networkservice.Connection{Id: fmt.Sprint("c", i)})
	}
	if f.clientConns() != 0 || f.connections() != 0 {
		t.Fatalf("%d client connections, %d chain entries left", f.clientConns(), f.connections())
	}
	for name, e := range eps {
		if open, _, _ := e.ledger.counts(); open != 0 {
			t.Fatalf("endpoint %s still holds %d connections", name, open)
		}
	}
}

func TestBadNextHop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  *url.URL
		code codes.Code
	}{
		{"no URL", nil, codes.Internal},
		{"unknown scheme", &url.URL{Scheme: "http", Host: "x:1"}, codes.InvalidArgument},
		{"tcp without port", &url.URL{Scheme: "tcp", Host: "x"}, codes.InvalidArgument},
		{"unix without path", &url.URL{Scheme: "unix"}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &forwarder{connect: connect.NewServer()}
			var elems []chain.ServerElement
			if tt.url != nil {
				elems = append(elems, clienturl.NewServer(tt.url))
			}
			f.srv = chain.NewServer(append(elems, f.connect)...)
			_, err := f.srv.Request(context.Background(), requestTo("c", ""))
			if status.Code(err) != tt.code {
				t.Fatalf("got %v, want %v", err, tt.code)
			}
			if f.clientConns() != 0 || f.connections() != 0 {
				t.Fatal("a refused request left state")
			}
		})
	}
}
