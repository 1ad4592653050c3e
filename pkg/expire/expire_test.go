package expire_test

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

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

// TestThePreviousHopLearnsItsDeadline checks that the response tells the
// previous hop when its connection expires: the default lifetime when its
// segment had no expiry (as an NSM client sends it), the segment's own
// expiry when within the maximum, the maximum otherwise.
func TestThePreviousHopLearnsItsDeadline(t *testing.T) {
	t.Parallel()
	const defaultLifetime, maxLifetime = time.Hour, 2 * time.Hour
	for _, tc := range []struct {
		name    string
		expires time.Duration // from now; 0 for none
		want    time.Duration // from now
	}{
		{"no expiry", 0, defaultLifetime},
		{"within the maximum", 90 * time.Minute, 90 * time.Minute},
		{"beyond the maximum", 1000 * time.Hour, maxLifetime},
		{"already past", -time.Minute, -time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := chain.NewServer(updatepath.NewServer("endpoint"),
				expire.NewServer(expire.WithDefaultLifetime(defaultLifetime), expire.WithMaxLifetime(maxLifetime)),
				chain.Tail(newEvents()))
			seg := &networkservice.PathSegment{Name: "nsc", Id: "c-" + tc.name}
			if tc.expires != 0 {
				seg.Expires = timestamppb.New(time.Now().Add(tc.expires))
			}
			conn := &networkservice.Connection{Id: seg.GetId(), Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{seg}}}
			before := time.Now()
			resp, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn.Clone()})
			after := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = srv.Close(context.Background(), resp.Clone()) })
			if i := resp.GetPath().GetIndex(); i != 0 {
				t.Fatalf("response at path index %d, want the caller's 0", i)
			}
			got := resp.GetCurrentPathSegment().GetExpires()
			if got == nil {
				t.Fatal("the caller's segment came back without an expiry")
			}
			lo, hi := before.Add(tc.want), after.Add(tc.want)
			if tc.expires != 0 && tc.expires == tc.want { // kept as sent
				lo, hi = seg.GetExpires().AsTime(), seg.GetExpires().AsTime()
			}
			if at := got.AsTime(); at.Before(lo) || at.After(hi) {
				t.Fatalf("caller's segment expires at %v, want within [%v, %v]", at, lo, hi)
			}
		})
	}
}
