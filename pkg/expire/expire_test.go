package expire_test

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/expire"
	"github.com/tether-mesh/tether/pkg/refresh"
	"github.com/tether-mesh/tether/pkg/updatepath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	lifetime    = 150 * time.Millisecond
	testTimeout = 10 * time.Second
)

// events reports what reaches the end of the server chain.
type events struct {
	requests, closes chan string
}

func newEvents() *events {
	return &events{requests: make(chan string, 100), closes: make(chan string, 100)}
}

func (e *events) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	e.requests <- req.GetConnection().GetId()
	return req.GetConnection(), nil
}

func (e *events) Close(_ context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	e.closes <- conn.GetId()
	return &emptypb.Empty{}, nil
}

type asClient struct {
	srv networkservice.NetworkServiceServer
}

func (a asClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	return a.srv.Request(ctx, req)
}

func (a asClient) Close(ctx context.Context, conn *networkservice.Connection, _ ...grpc.CallOption) (*emptypb.Empty, error) {
	return a.srv.Close(ctx, conn)
}

func waitFor(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

func setup(withRefresh bool) (networkservice.NetworkServiceClient, networkservice.NetworkServiceServer, *events) {
	ev := newEvents()
	srv := chain.NewServer(updatepath.NewServer("endpoint"), expire.NewServer(), chain.Tail(ev))
	var elems []chain.ClientElement
	if withRefresh {
		elems = append(elems, refresh.NewClient())
	}
	elems = append(elems, updatepath.NewClient("client", updatepath.WithLifetime(lifetime)), chain.ClientTail(asClient{srv}))
	return chain.NewClient(elems...), srv, ev
}

func TestAnUnrefreshedConnectionIsClosed(t *testing.T) {
	t.Parallel()
	cl, srv, ev := setup(false)
	conn, err := cl.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	endpointID := waitFor(t, ev.requests, "the request")
	start := time.Now()
	if id := waitFor(t, ev.closes, "the expiry"); id != endpointID {
		t.Fatalf("closed %s, want %s", id, endpointID)
	}
	if took := time.Since(start); took < lifetime/2 {
		t.Fatalf("closed after %v, before the lifetime of %v", took, lifetime)
	}
	// The client's own Close still works and leaves nothing. At the
	// server's head it runs after the expiry's Close has returned (one event
	// at a time per connection), so the server's count is final then: the
	// tail saw the expiry's Close before the head forgot the connection.
	if _, err := cl.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if n := srv.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("%d connections after the expiry", n)
	}
	if n := cl.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("client holds %d connections", n)
	}
}

func TestARefreshedConnectionLives(t *testing.T) {
	t.Parallel()
	cl, srv, ev := setup(true)
	conn, err := cl.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ev.requests, "the request")
	// Ten refreshes cover more than three lifetimes; no close may come.
	for i := range 10 {
		select {
		case <-ev.requests:
		case id := <-ev.closes:
			t.Fatalf("connection %s closed while refreshed (after %d refreshes)", id, i)
		case <-time.After(testTimeout):
			t.Fatal("timed out waiting for a refresh")
		}
	}
	if _, err := cl.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ev.closes, "the close")
	// After Close neither the refresh nor the expiry timer acts again.
	select {
	case id := <-ev.closes:
		t.Fatalf("a second close of %s after the client's Close", id)
	case id := <-ev.requests:
		t.Fatalf("a refresh of %s after the client's Close", id)
	case <-time.After(3 * lifetime): // a bounded look for a wrong event
	}
	if s, c := srv.(chain.ConnectionCounter).Connections(), cl.(chain.ConnectionCounter).Connections(); s != 0 || c != 0 {
		t.Fatalf("server holds %d, client %d", s, c)
	}
}

func TestWithoutExpiryTheDefaultLifetimeApplies(t *testing.T) {
	t.Parallel()
	ev := newEvents()
	srv := chain.NewServer(expire.NewServer(expire.WithDefaultLifetime(lifetime)), chain.Tail(ev))
	if _, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "bare"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ev.requests, "the request")
	if id := waitFor(t, ev.closes, "the expiry"); id != "bare" {
		t.Fatalf("closed %s", id)
	}
}
