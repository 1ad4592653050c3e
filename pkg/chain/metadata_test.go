package chain_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// testTimeout bounds every wait in these tests; nothing here should take
// more than a fraction of it.
const testTimeout = 10 * time.Second

var countKey = chain.NewKey[*int]("count")

// counting stores a per-connection counter in metadata and reports it in the
// response payload: each request sees the value of the last.
func counting() chain.ServerElement {
	return chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			n, _ := countKey.LoadOrStore(ctx, new(int))
			*n++
			conn, err := next.Request(ctx, req)
			if err == nil {
				conn.Payload = fmt.Sprint(*n)
			}
			return conn, err
		},
	}
}

// failing fails a request whose labels say so, and a close when told.
func failing() chain.ServerElement {
	return chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			if req.GetConnection().GetLabels()["fail"] != "" {
				return nil, errDown
			}
			return next.Request(ctx, req)
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			if conn.GetLabels()["fail"] != "" {
				return nil, errDown
			}
			return next.Close(ctx, conn)
		},
	}
}

func connections(t *testing.T, x any) int {
	t.Helper()
	c, ok := x.(chain.ConnectionCounter)
	if !ok {
		t.Fatalf("%T is not a ConnectionCounter", x)
	}
	return c.Connections()
}

func TestMetadataLifetime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	failReq := func(id string) *networkservice.NetworkServiceRequest {
		r := request(id)
		r.Connection.Labels = map[string]string{"fail": "yes"}
		return r
	}
	tests := []struct {
		name    string
		events  func(t *testing.T, srv networkservice.NetworkServiceServer)
		payload string // of the last successful request
		left    int
	}{
		{
			name: "refreshes share the store",
			events: func(t *testing.T, srv networkservice.NetworkServiceServer) {
				for range 3 {
					if _, err := srv.Request(ctx, request("a")); err != nil {
						t.Fatal(err)
					}
				}
			},
			left: 1,
		},
		{
			name: "a failed first request leaves nothing",
			events: func(t *testing.T, srv networkservice.NetworkServiceServer) {
				if _, err := srv.Request(ctx, failReq("a")); err == nil {
					t.Fatal("want an error")
				}
			},
			left: 0,
		},
		{
			name: "a failed refresh keeps the connection",
			events: func(t *testing.T, srv networkservice.NetworkServiceServer) {
				if _, err := srv.Request(ctx, request("a")); err != nil {
					t.Fatal(err)
				}
				if _, err := srv.Request(ctx, failReq("a")); err == nil {
					t.Fatal("want an error")
				}
				conn, err := srv.Request(ctx, request("a"))
				if err != nil {
					t.Fatal(err)
				}
				if conn.GetPayload() != "3" {
					t.Fatalf("the store was lost: count %s, want 3", conn.GetPayload())
				}
			},
			left: 1,
		},
		{
			name: "a failing close still deletes",
			events: func(t *testing.T, srv networkservice.NetworkServiceServer) {
				conn, err := srv.Request(ctx, request("a"))
				if err != nil {
					t.Fatal(err)
				}
				conn.Labels = map[string]string{"fail": "yes"}
				if _, err := srv.Close(ctx, conn); err == nil {
					t.Fatal("want an error")
				}
				conn, err = srv.Request(ctx, request("a"))
				if err != nil {
					t.Fatal(err)
				}
				if conn.GetPayload() != "1" {
					t.Fatalf("a new connection saw old metadata: count %s", conn.GetPayload())
				}
			},
			left: 1,
		},
		{
			name: "a close for an unknown ID leaves nothing",
			events: func(t *testing.T, srv networkservice.NetworkServiceServer) {
				if _, err := srv.Close(ctx, &networkservice.Connection{Id: "never"}); err != nil {
					t.Fatal(err)
				}
			},
			left: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := chain.NewServer(counting(), failing())
			tt.events(t, srv)
			if got := connections(t, srv); got != tt.left {
				t.Fatalf("%d connections, want %d", got, tt.left)
			}
		})
	}
}

func TestTenThousandConnectionsLeaveNoEntry(t *testing.T) {
	t.Parallel()
	srv := chain.NewServer(counting())
	cl := chain.NewClient(chain.ServerToClient(counting()))
	ctx := context.Background()
	const n = 10000
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				id := fmt.Sprint("conn-", i)
				for _, refresh := range []bool{false, true} {
					if _, err := srv.Request(ctx, request(id)); err != nil {
						t.Error(err, refresh)
						return
					}
				}
				conn, err := cl.Request(ctx, request(id))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := srv.Close(ctx, conn); err != nil {
					t.Error(err)
				}
				if _, err := cl.Close(ctx, conn); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if s, c := connections(t, srv), connections(t, cl); s != 0 || c != 0 {
		t.Fatalf("after %d connections opened and closed: server holds %d, client %d", n, s, c)
	}
}

func TestKeysOfTwoElementsNeverCollide(t *testing.T) {
	t.Parallel()
	type state struct{ owner string }
	keyA := chain.NewKey[*state]("a")
	keyB := chain.NewKey[*state]("b")
	var seen []string
	srv := chain.NewServer(
		chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			keyA.Store(ctx, &state{"a"})
			return next.Request(ctx, req)
		}},
		chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			if _, ok := keyB.Load(ctx); ok {
				t.Error("key b sees a value it never stored")
			}
			keyB.Store(ctx, &state{"b"})
			a, _ := keyA.Load(ctx)
			b, _ := keyB.Load(ctx)
			seen = append(seen, a.owner, b.owner)
			return next.Request(ctx, req)
		}},
	)
	if _, err := srv.Request(context.Background(), request("x")); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[a b]" {
		t.Fatalf("values %v", seen)
	}
}

func TestKeyOutsideAChain(t *testing.T) {
	t.Parallel()
	if _, ok := countKey.Load(context.Background()); ok {
		t.Fatal("Load outside a chain found a value")
	}
	countKey.Delete(context.Background()) // must not panic
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("Store outside a chain did not panic")
		}
	}()
	countKey.Store(context.Background(), new(int))
}

// overlapChecker fails the test when two events of one ID overlap.
type overlapChecker struct {
	t       *testing.T
	running sync.Map // id -> *atomic.Int32
	events  atomic.Int64
}

func (o *overlapChecker) enter(id string) func() {
	v, _ := o.running.LoadOrStore(id, new(atomic.Int32))
	n := v.(*atomic.Int32)
	if n.Add(1) != 1 {
		o.t.Errorf("two events for %s overlap", id)
	}
	o.events.Add(1)
	return func() { n.Add(-1) }
}

func (o *overlapChecker) element() chain.ServerElement {
	return chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			defer o.enter(req.GetConnection().GetId())()
			countKey.LoadOrStore(ctx, new(int)) // touch metadata: the race detector watches it
			return next.Request(ctx, req)
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			defer o.enter(conn.GetId())()
			countKey.Delete(ctx)
			return next.Close(ctx, conn)
		},
	}
}

func TestEventsOfOneIDNeverOverlap(t *testing.T) {
	t.Parallel()
	oc, oc2 := &overlapChecker{t: t}, &overlapChecker{t: t}
	var handles sync.Map
	grabHandle := chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
		h, _ := chain.Reentry(ctx)
		handles.Store(h.ID(), h)
		return next.Request(ctx, req)
	}}
	srv := chain.NewServer(oc.element(), grabHandle, oc2.element())
	ctx := context.Background()
	const ids, workers, rounds = 4, 32, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				id := fmt.Sprint("id-", (w+r)%ids)
				switch r % 4 {
				case 0, 1:
					_, _ = srv.Request(ctx, request(id))
				case 2:
					if h, ok := handles.Load(id); ok {
						_, _ = h.(chain.Handle).Request(ctx, nil)
					}
				case 3:
					_, _ = srv.Close(ctx, &networkservice.Connection{Id: id})
				}
			}
		})
	}
	wg.Wait()
	for i := range ids {
		_, _ = srv.Close(ctx, &networkservice.Connection{Id: fmt.Sprint("id-", i)})
	}
	if oc.events.Load() < workers*rounds/2 {
		t.Fatalf("only %d events ran", oc.events.Load())
	}
	if n := connections(t, srv); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

// gate is an element that holds a request until released, after saying it
// arrived.
type gate struct {
	arrived chan string
	release chan struct{}
}

func newGate() *gate {
	return &gate{arrived: make(chan string, 16), release: make(chan struct{})}
}

func (g *gate) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	g.arrived <- req.GetConnection().GetId()
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return next.Request(ctx, req)
}

func (g *gate) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	g.arrived <- "close " + conn.GetId()
	return next.Close(ctx, conn)
}

func waitFor[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for an event")
		panic("unreachable")
	}
}

func TestDifferentIDsRunInParallel(t *testing.T) {
	t.Parallel()
	g := newGate()
	srv := chain.NewServer(g)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	errs := make(chan error, 2)
	for _, id := range []string{"a", "b"} {
		go func() {
			_, err := srv.Request(ctx, request(id))
			errs <- err
		}()
	}
	// Both requests must be inside the chain at once before either is let go.
	got := map[string]bool{waitFor(t, g.arrived): true, waitFor(t, g.arrived): true}
	if !got["a"] || !got["b"] {
		t.Fatalf("arrivals %v", got)
	}
	close(g.release)
	for range 2 {
		if err := waitFor(t, errs); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCloseWaitsForRequest(t *testing.T) {
	t.Parallel()
	g := newGate()
	srv := chain.NewServer(g)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	order := make(chan string, 2)
	go func() {
		_, err := srv.Request(ctx, request("a"))
		order <- fmt.Sprint("request done ", err)
	}()
	if id := waitFor(t, g.arrived); id != "a" {
		t.Fatalf("arrived %s", id)
	}
	go func() {
		_, err := srv.Close(ctx, &networkservice.Connection{Id: "a"})
		order <- fmt.Sprint("close done ", err)
	}()
	// The close cannot arrive while the request holds the ID.
	select {
	case ev := <-g.arrived:
		t.Fatalf("%s arrived while the request ran", ev)
	case ev := <-order:
		t.Fatalf("%s while the request ran", ev)
	case <-time.After(50 * time.Millisecond): // a bounded look for a wrong event, not a wait for a right one
	}
	close(g.release)
	if ev := waitFor(t, g.arrived); ev != "close a" {
		t.Fatalf("then %q", ev)
	}
	// Both end well; which goroutine reports first is up to the scheduler
	// (the request's event is over before the close's starts).
	done := map[string]bool{waitFor(t, order): true, waitFor(t, order): true}
	if !done["request done <nil>"] || !done["close done <nil>"] {
		t.Fatalf("ended with %v", done)
	}
	if n := connections(t, srv); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

func TestWaitingForAnIDEndsWithTheContext(t *testing.T) {
	t.Parallel()
	g := newGate()
	srv := chain.NewServer(g)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := srv.Request(ctx, request("a"))
		done <- err
	}()
	waitFor(t, g.arrived)
	short, cancelShort := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		_, err := srv.Request(short, request("a"))
		waiting <- err
	}()
	cancelShort()
	if err := waitFor(t, waiting); status.Code(err) != codes.Canceled {
		t.Fatalf("waiter got %v, want Canceled", err)
	}
	close(g.release)
	if err := waitFor(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestReentryRunsFromTheStart(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	handles := make(chan chain.Handle, 1)
	grab := chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
		if h, ok := chain.Reentry(ctx); ok && req.GetConnection().GetLabels()["reentered"] == "" {
			handles <- h
		}
		return next.Request(ctx, req)
	}}
	srv := chain.NewServer(step(tr, "first"), counting(), grab, step(tr, "last"))
	ctx := context.Background()
	req := request("a")
	req.MechanismPreferences = []*networkservice.Mechanism{{Type: "RDMA"}}
	if _, err := srv.Request(ctx, req); err != nil {
		t.Fatal(err)
	}
	h := waitFor(t, handles)
	if h.ID() != "a" {
		t.Fatalf("handle for %q", h.ID())
	}
	tr.steps = nil

	conn, err := h.Request(ctx, func(r *networkservice.NetworkServiceRequest) {
		if len(r.GetMechanismPreferences()) != 1 {
			t.Errorf("re-entry lost the mechanism preferences: %v", r.GetMechanismPreferences())
		}
		r.Connection.Labels = map[string]string{"reentered": "yes"}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.String(); got != "[first> last> <last <first]" {
		t.Fatalf("re-entry ran %s", got)
	}
	if conn.GetPayload() != "2first" || conn.GetLabels()["reentered"] != "yes" {
		t.Fatalf("re-entry did not share the connection's metadata or lost the change: %v", conn)
	}

	if _, err := h.Request(ctx, func(r *networkservice.NetworkServiceRequest) { r.Connection.Id = "b" }); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("changing the ID: %v, want InvalidArgument", err)
	}

	tr.steps = nil
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tr.String(); got != "[firstx lastx]" {
		t.Fatalf("re-entered close ran %s", got)
	}
	if _, err := h.Request(ctx, nil); err != chain.ErrConnectionClosed { //nolint:errorlint // sentinel returned as is
		t.Fatalf("request after close: %v", err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if n := connections(t, srv); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

func TestReentryOfAFailedFirstRequest(t *testing.T) {
	t.Parallel()
	handles := make(chan chain.Handle, 1)
	srv := chain.NewServer(chain.ServerFuncs{RequestFunc: func(ctx context.Context, _ *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
		h, _ := chain.Reentry(ctx)
		handles <- h
		return nil, errDown
	}})
	if _, err := srv.Request(context.Background(), request("a")); err == nil {
		t.Fatal("want an error")
	}
	h := waitFor(t, handles)
	if _, err := h.Request(context.Background(), nil); err != chain.ErrConnectionClosed { //nolint:errorlint // sentinel returned as is
		t.Fatalf("got %v", err)
	}
	if _, ok := chain.Reentry(context.Background()); ok {
		t.Fatal("a handle outside a chain event")
	}
}

func TestClientReentryKeepsCallOptions(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	handles := make(chan chain.Handle, 1)
	cl := chain.NewClient(chain.ServerToClient(chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
		if h, ok := chain.Reentry(ctx); ok {
			select {
			case handles <- h:
			default:
			}
		}
		return next.Request(ctx, req)
	}}), chain.ClientTail(plainClient{tr, "stub"}))
	ctx := context.Background()
	conn, err := cl.Request(ctx, request("a"), optA{})
	if err != nil {
		t.Fatal(err)
	}
	h := waitFor(t, handles)
	if _, err := h.Request(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tr.String(); got != "[stub1 stub1 stubx1]" {
		t.Fatalf("calls %s", got)
	}
	_ = conn
}

func TestCloseIfChecksUnderTheLock(t *testing.T) {
	t.Parallel()
	handles := make(chan chain.Handle, 1)
	srv := chain.NewServer(counting(), chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
		if h, ok := chain.Reentry(ctx); ok {
			select {
			case handles <- h:
			default:
			}
		}
		return next.Request(ctx, req)
	}})
	ctx := context.Background()
	if _, err := srv.Request(ctx, request("a")); err != nil {
		t.Fatal(err)
	}
	h := waitFor(t, handles)
	// cond sees the connection's metadata, and a false cond closes nothing.
	closed, err := h.CloseIf(ctx, func(ctx context.Context) bool {
		n, ok := countKey.Load(ctx)
		return ok && *n == 2
	})
	if err != nil || closed || connections(t, srv) != 1 {
		t.Fatalf("closed %v err %v with a false condition", closed, err)
	}
	closed, err = h.CloseIf(ctx, func(ctx context.Context) bool {
		n, ok := countKey.Load(ctx)
		return ok && *n == 1
	})
	if err != nil || !closed || connections(t, srv) != 0 {
		t.Fatalf("closed %v err %v with a true condition", closed, err)
	}
	if closed, _ := h.CloseIf(ctx, func(context.Context) bool { return true }); closed {
		t.Fatal("closed a connection twice")
	}
}

func TestCloseAll(t *testing.T) {
	t.Parallel()
	tr := &trace{}
	srv := chain.NewServer(step(tr, "a"))
	ctx := context.Background()
	for _, id := range []string{"x", "y", "z"} {
		if _, err := srv.Request(ctx, request(id)); err != nil {
			t.Fatal(err)
		}
	}
	tr.steps = nil
	n, err := chain.CloseAll(ctx, srv)
	if err != nil || n != 3 {
		t.Fatalf("closed %d, %v", n, err)
	}
	if got := tr.String(); got != "[ax ax ax]" || connections(t, srv) != 0 {
		t.Fatalf("ran %s, %d left", got, connections(t, srv))
	}
	if _, err := chain.CloseAll(ctx, struct{}{}); err == nil {
		t.Fatal("CloseAll of something that is not a chain")
	}
}
