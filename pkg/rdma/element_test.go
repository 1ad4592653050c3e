package rdma_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/inproc"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

// closes reports the Closes that reach the end of an endpoint chain.
type closes chan string

func (c closes) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (c closes) Close(_ context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	c <- conn.GetId()
	return &emptypb.Empty{}, nil
}

// endpointChain is a member's endpoint chain around the terminal element,
// listening with the inproc provider.
func endpointChain(t *testing.T, opts ...rdma.ServerOption) (networkservice.NetworkServiceServer, rdma.Listener, closes) {
	t.Helper()
	l, err := inproc.New().Listen(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	cl := make(closes, 16)
	srv := chain.NewServer(
		chain.ServerFuncs{CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			resp, err := next.Close(ctx, conn)
			cl <- conn.GetId()
			return resp, err
		}},
		rdma.NewServer(append([]rdma.ServerOption{rdma.WithListener("inproc", l)}, opts...)...),
	)
	return srv, l, cl
}

func requestFor(id string, prefs ...*networkservice.Mechanism) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}, MechanismPreferences: prefs}
}

func TestTerminalChoosesAMechanism(t *testing.T) {
	srv, l, _ := endpointChain(t)
	tcpPref := rdma.Preference("tcp")
	inprocPref := rdma.Preference("inproc")
	otherProcess := rdma.Preference("inproc")
	otherProcess.Parameters[rdma.ParamLocality] = "process:elsewhere"
	remoteInproc := rdma.Preference("inproc")
	remoteInproc.Cls = cls.REMOTE
	tests := []struct {
		name  string
		prefs []*networkservice.Mechanism
		want  string // provider, or the error text
	}{
		{"first usable", []*networkservice.Mechanism{tcpPref, inprocPref}, "inproc"},
		{"another process's inproc", []*networkservice.Mechanism{otherProcess}, "no usable mechanism"},
		{"inproc offered as remote", []*networkservice.Mechanism{remoteInproc}, "no usable mechanism"},
		{"another mechanism type", []*networkservice.Mechanism{{Type: "KERNEL", Cls: cls.LOCAL}}, "no usable mechanism"},
		{"nothing offered", nil, "the request offered nothing"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprint("c", i)
			conn, err := srv.Request(context.Background(), requestFor(id, tt.prefs...))
			if !strings.HasPrefix(tt.want, "no usable") && !strings.HasPrefix(tt.want, "the request") {
				if err != nil {
					t.Fatal(err)
				}
				b, err := rdma.ParseBinding(conn.GetMechanism())
				if err != nil || b.Provider != tt.want || b.Address != l.Addr() || b.ConnID != id || b.Secret.IsZero() {
					t.Fatalf("binding %+v %v", b, err)
				}
				_, _ = srv.Close(context.Background(), conn)
				return
			}
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "providers [inproc (LOCAL, same process)]") {
				t.Fatalf("got %v, want FailedPrecondition saying %q and what the endpoint supports", err, tt.want)
			}
			if n := srv.(chain.ConnectionCounter).Connections(); n != 0 {
				t.Fatalf("a refused request left %d connections", n)
			}
		})
	}
}

func TestTerminalRefreshAllocatesNothing(t *testing.T) {
	l, err := inproc.New().Listen(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	terminal := rdma.NewServer(rdma.WithListener("inproc", l))
	end := chain.ServerAsNext(closes(make(chan string, 1)))
	var allocs float64
	var first, again *networkservice.Mechanism
	probe := chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
		conn, err := terminal.Request(ctx, req, end)
		if err != nil {
			return nil, err
		}
		first = conn.GetMechanism()
		allocs = testing.AllocsPerRun(1000, func() {
			c, err := terminal.Request(ctx, req, end)
			if err != nil {
				t.Fatal(err)
			}
			again = c.GetMechanism()
		})
		return conn, nil
	}, CloseFunc: func(ctx context.Context, conn *networkservice.Connection, _ *chain.NextServer) (*emptypb.Empty, error) {
		return terminal.Close(ctx, conn, end)
	}}
	srv := chain.NewServer(probe)
	conn, err := srv.Request(context.Background(), requestFor("c1", rdma.Preference("inproc")))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background(), conn)
	if allocs != 0 {
		t.Fatalf("a refresh allocates %v times", allocs)
	}
	if again != first {
		t.Fatal("a refresh answered another binding")
	}
}

func TestUnattachedConnectionsAreReleased(t *testing.T) {
	srv, l, cl := endpointChain(t, rdma.WithAttachTimeout(100*time.Millisecond))
	ctx := context.Background()
	// Nobody attaches: the connection goes after the attach timeout.
	if _, err := srv.Request(ctx, requestFor("never", rdma.Preference("inproc"))); err != nil {
		t.Fatal(err)
	}
	waitClose(t, cl, "never")
	// The client attaches, then its channel breaks and it does not come back.
	conn, err := srv.Request(ctx, requestFor("gone", rdma.Preference("inproc")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := rdma.ParseBinding(conn.GetMechanism())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := inproc.New().Dial(ctx, l.Addr(), b.ConnID, b.Secret)
	if err != nil {
		t.Fatal(err)
	}
	// A second channel with the right secret is refused while one is attached.
	if second, err := inproc.New().Dial(ctx, l.Addr(), b.ConnID, b.Secret); err == nil {
		_ = second.Close()
		t.Fatal("a second channel attached to one connection")
	}
	_ = ch.Close()
	waitClose(t, cl, "gone")
	// The Close event reaches the end of the chain just before the head
	// drops the connection: look for a bounded moment.
	deadline := time.After(testTimeout)
	for srv.(chain.ConnectionCounter).Connections() != 0 {
		select {
		case <-deadline:
			t.Fatalf("%d connections left", srv.(chain.ConnectionCounter).Connections())
		case <-time.After(time.Millisecond): // the head's counter has no event to wait on
		}
	}
}

func waitClose(t *testing.T, cl closes, id string) {
	t.Helper()
	select {
	case got := <-cl:
		if got != id {
			t.Fatalf("closed %s, want %s", got, id)
		}
	case <-time.After(testTimeout):
		t.Fatalf("%s was never released", id)
	}
}

// router is the far end of a client chain in these tests: it sends each
// request to the endpoint chain its "to" label names.
type router struct {
	endpoints map[string]networkservice.NetworkServiceServer
}

func (r *router) pick(conn *networkservice.Connection) networkservice.NetworkServiceServer {
	return r.endpoints[conn.GetLabels()["to"]]
}

func (r *router) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	resp, err := r.pick(req.GetConnection()).Request(ctx, req.Clone())
	if err != nil {
		return nil, err
	}
	resp.Labels = req.GetConnection().GetLabels()
	return resp, nil
}

func (r *router) Close(ctx context.Context, conn *networkservice.Connection, _ ...grpc.CallOption) (*emptypb.Empty, error) {
	return r.pick(conn).Close(ctx, conn.Clone())
}

// holding is a channel handler that never reads: what is sent to it stays
// unacknowledged.
func holding(ctx context.Context, ch rdma.Channel) {
	select {
	case <-ctx.Done():
	case <-ch.Done():
	}
}

// recording reads every message and reports it.
type recording struct {
	mu   sync.Mutex
	msgs []string
	got  chan struct{}
}

func (r *recording) handle(ctx context.Context, ch rdma.Channel) {
	var m rdma.Message
	for ch.Recv(ctx, &m) == nil {
		r.mu.Lock()
		r.msgs = append(r.msgs, fmt.Sprintf("%s retry=%v", m.Payload, m.Retry()))
		r.mu.Unlock()
		r.got <- struct{}{}
	}
}

func TestClientRebindsAndReplays(t *testing.T) {
	a, _, _ := endpointChain(t, rdma.WithChannelHandler(holding))
	rec := &recording{got: make(chan struct{}, 16)}
	b, _, _ := endpointChain(t, rdma.WithChannelHandler(rec.handle))
	type bind struct {
		ch, old  rdma.Channel
		replayed []rdma.Message
	}
	binds := make(chan bind, 4)
	cl := chain.NewClient(
		rdma.NewClient(rdma.WithProviders(inproc.New()), rdma.WithBind(func(_ string, ch, old rdma.Channel, replayed []rdma.Message) { binds <- bind{ch, old, replayed} })),
		chain.ClientTail(&router{endpoints: map[string]networkservice.NetworkServiceServer{"a": a, "b": b}}),
	)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c1", Labels: map[string]string{"to": "a"}}}
	conn, err := cl.Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	first := <-binds
	if first.old != nil || first.replayed != nil || first.ch.Provider() != "inproc" {
		t.Fatalf("first bind %+v", first)
	}
	// A refresh with the same binding keeps the channel.
	if conn, err = cl.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn, MechanismPreferences: req.MechanismPreferences}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-binds:
		t.Fatalf("a refresh rebound the channel: %+v", b)
	default:
	}
	// Three messages a never reads: unacknowledged.
	for i := range 3 {
		if _, err := first.ch.Send(ctx, &rdma.Message{Payload: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The connection moves to b: the messages go again, marked as retries.
	conn.Labels["to"] = "b"
	conn.Mechanism = nil
	if _, err = cl.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn, MechanismPreferences: req.MechanismPreferences}); err != nil {
		t.Fatal(err)
	}
	second := <-binds
	if second.old != first.ch || second.ch == first.ch {
		t.Fatal("the move did not bind a new channel")
	}
	select {
	case <-first.ch.Done(): // closed off the Request's path
	case <-time.After(testTimeout):
		t.Fatal("the move did not close the old channel")
	}
	for range 3 {
		select {
		case <-rec.got:
		case <-time.After(testTimeout):
			t.Fatal("the replayed messages never arrived")
		}
	}
	rec.mu.Lock()
	got := fmt.Sprint(rec.msgs)
	rec.mu.Unlock()
	if got != "[m0 retry=true m1 retry=true m2 retry=true]" {
		t.Fatalf("b received %s", got)
	}
	// The bind is told what went again.
	var told []string
	for _, m := range second.replayed {
		told = append(told, fmt.Sprintf("%s retry=%v", m.Payload, m.Retry()))
	}
	if got := fmt.Sprint(told); got != "[m0 retry=true m1 retry=true m2 retry=true]" {
		t.Fatalf("the bind was told of %s", got)
	}
	if _, err := cl.Close(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if second.ch.Err() == nil {
		t.Fatal("Close left the channel open")
	}
}

func TestClientRefusesAnUnusableAnswer(t *testing.T) {
	cl := make(closes, 4)
	bad := chain.NewServer(chain.ServerFuncs{RequestFunc: func(_ context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
		conn := req.GetConnection()
		conn.Mechanism = &networkservice.Mechanism{Type: rdma.MechanismType, Parameters: map[string]string{rdma.ParamProvider: "inproc"}}
		return conn, nil
	}}, chain.Tail(cl))
	c := chain.NewClient(rdma.NewClient(rdma.WithProviders(inproc.New())), chain.ClientTail(&router{endpoints: map[string]networkservice.NetworkServiceServer{"x": bad}}))
	_, err := c.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c1", Labels: map[string]string{"to": "x"}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
	waitClose(t, cl, "c1") // the endpoint's half-open connection is closed
	if n := c.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

// twoProviderChain is a member's endpoint chain that listens with tcp (on
// loopback) and inproc, offering tcp first.
func twoProviderChain(t *testing.T) (srv networkservice.NetworkServiceServer, tcpL, inprocL rdma.Listener, cl closes) {
	t.Helper()
	var err error
	if tcpL, err = tcp.New().Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tcpL.Close() })
	if inprocL, err = inproc.New().Listen(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inprocL.Close() })
	cl = make(closes, 16)
	srv = chain.NewServer(rdma.NewServer(rdma.WithListener("tcp", tcpL), rdma.WithListener("inproc", inprocL)), chain.Tail(cl))
	return srv, tcpL, inprocL, cl
}

func TestTerminalBindsAnewWhenTheProviderIsNoLongerOffered(t *testing.T) {
	tests := []struct {
		name    string
		refresh []*networkservice.Mechanism
		want    string // the provider after the refresh
	}{
		{"still offered", []*networkservice.Mechanism{rdma.Preference("inproc"), rdma.Preference("tcp")}, "tcp"},
		{"no longer offered", []*networkservice.Mechanism{rdma.Preference("inproc")}, "inproc"},
		{"no preferences", nil, "tcp"},
		{"only another mechanism type", []*networkservice.Mechanism{{Type: "KERNEL", Cls: cls.LOCAL}}, "tcp"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, tcpL, _, cl := twoProviderChain(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			id := fmt.Sprint("c", i)
			conn, err := srv.Request(ctx, requestFor(id, rdma.Preference("tcp"), rdma.Preference("inproc")))
			if err != nil {
				t.Fatal(err)
			}
			first, err := rdma.ParseBinding(conn.GetMechanism())
			if err != nil || first.Provider != "tcp" {
				t.Fatalf("first binding %+v %v", first, err)
			}
			conn, err = srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn, MechanismPreferences: tt.refresh})
			if err != nil {
				t.Fatal(err)
			}
			got, err := rdma.ParseBinding(conn.GetMechanism())
			if err != nil || got.Provider != tt.want {
				t.Fatalf("after the refresh: %+v %v, want provider %s", got, err, tt.want)
			}
			// A binding given up is released: its channel cannot be opened.
			ch, err := tcp.New().Dial(ctx, tcpL.Addr(), first.ConnID, first.Secret)
			switch {
			case tt.want == "tcp" && err != nil:
				t.Fatalf("the kept binding cannot be opened: %v", err)
			case tt.want != "tcp" && err == nil:
				t.Fatal("the binding given up can still be opened")
			case tt.want != "tcp" && !errors.Is(err, rdma.ErrUnknownConnection):
				t.Fatalf("the binding given up: %v, want ErrUnknownConnection", err)
			}
			if ch != nil {
				_ = ch.Close()
			}
			if _, err := srv.Close(ctx, conn); err != nil {
				t.Fatal(err)
			}
			waitClose(t, cl, id)
		})
	}
}

// failingProvider is a provider whose channels cannot be opened, as shm's
// cannot by a client running as another user than the member.
type failingProvider struct {
	rdma.Provider
}

func (failingProvider) Dial(context.Context, string, string, rdma.Secret) (rdma.Channel, error) {
	return nil, fmt.Errorf("connect: permission denied: %w", rdma.ErrUnreachable)
}

func TestClientFallsBackToTheNextProvider(t *testing.T) {
	tests := []struct {
		name      string
		providers []rdma.Provider
		want      string // the provider bound, or "" when the request fails
	}{
		{"the first opens", []rdma.Provider{tcp.New(), inproc.New()}, "tcp"},
		{"the first cannot be opened", []rdma.Provider{failingProvider{tcp.New()}, inproc.New()}, "inproc"},
		{"none can be opened", []rdma.Provider{failingProvider{tcp.New()}, failingProvider{inproc.New()}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, _, cl := twoProviderChain(t)
			binds := make(chan rdma.Channel, 4)
			c := chain.NewClient(
				rdma.NewClient(rdma.WithProviders(tt.providers...), rdma.WithBind(func(_ string, ch, _ rdma.Channel, _ []rdma.Message) { binds <- ch })),
				chain.ClientTail(&router{endpoints: map[string]networkservice.NetworkServiceServer{"m": srv}}),
			)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			conn, err := c.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c1", Labels: map[string]string{"to": "m"}}})
			if tt.want == "" {
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "tcp channel") || !strings.Contains(err.Error(), "inproc channel") {
					t.Fatalf("got %v, want Unavailable naming both failures", err)
				}
				waitClose(t, cl, "c1") // the endpoint's connection is closed
				if n := c.(chain.ConnectionCounter).Connections(); n != 0 {
					t.Fatalf("%d connections left at the client", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ch := <-binds
			if ch.Provider() != tt.want || conn.GetMechanism().GetParameters()[rdma.ParamProvider] != tt.want {
				t.Fatalf("bound %s, answered %v; want %s", ch.Provider(), conn.GetMechanism(), tt.want)
			}
			select {
			case extra := <-binds:
				t.Fatalf("a second bind: %s", extra.Provider())
			default:
			}
			if n := srv.(chain.ConnectionCounter).Connections(); n != 1 {
				t.Fatalf("the endpoint holds %d connections", n)
			}
			if _, err := c.Close(ctx, conn); err != nil {
				t.Fatal(err)
			}
			waitClose(t, cl, "c1")
		})
	}
}
