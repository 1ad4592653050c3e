package updatepath_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/updatepath"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return t0 }

// seen records the connection ID and path index each hop's next element
// sees, on Request and Close.
type seen struct {
	requests, closes []string
}

func (s *seen) element(hop string) chain.ServerElement {
	return chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			s.requests = append(s.requests, fmt.Sprintf("%s:%s@%d", hop, req.GetConnection().GetId(), req.GetConnection().GetPath().GetIndex()))
			return next.Request(ctx, req)
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			s.closes = append(s.closes, fmt.Sprintf("%s:%s@%d", hop, conn.GetId(), conn.GetPath().GetIndex()))
			return next.Close(ctx, conn)
		},
	}
}

// asClient lets a server chain be the far end of a client chain.
type asClient struct {
	srv networkservice.NetworkServiceServer
}

func (a asClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	return a.srv.Request(ctx, req)
}

func (a asClient) Close(ctx context.Context, conn *networkservice.Connection, _ ...grpc.CallOption) (*emptypb.Empty, error) {
	return a.srv.Close(ctx, conn)
}

// topology is client -> forwarder -> member, each hop its own chain.
type topology struct {
	seen      *seen
	members   map[string]networkservice.NetworkServiceServer
	client    networkservice.NetworkServiceClient
	forwarder networkservice.NetworkServiceServer
}

func newTopology() *topology {
	tp := &topology{seen: &seen{}, members: map[string]networkservice.NetworkServiceServer{}}
	for _, m := range []string{"member-1", "member-2"} {
		tp.members[m] = chain.NewServer(updatepath.NewServer(m, updatepath.WithClock(clock), updatepath.WithLifetime(3*time.Minute)), tp.seen.element(m))
	}
	// The forwarder sends a connection to the member its label names.
	route := chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
			return tp.members[req.GetConnection().GetLabels()["member"]].Request(ctx, req)
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, _ *chain.NextServer) (*emptypb.Empty, error) {
			return tp.members[conn.GetLabels()["member"]].Close(ctx, conn)
		},
	}
	tp.forwarder = chain.NewServer(updatepath.NewServer("forwarder", updatepath.WithClock(clock), updatepath.WithLifetime(2*time.Minute)), tp.seen.element("forwarder"), route)
	tp.client = chain.NewClient(updatepath.NewClient("client", updatepath.WithClock(clock)), chain.ClientTail(asClient{tp.forwarder}))
	return tp
}

// connect requests the client's connection "client-id" to member-1.
func (tp *topology) connect(t *testing.T) *networkservice.Connection {
	t.Helper()
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "client-id", Labels: map[string]string{"member": "member-1"}}}
	conn, err := tp.client.Request(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestPathAcrossThreeHops(t *testing.T) {
	t.Parallel()
	tp := newTopology()
	ctx := context.Background()
	conn := tp.connect(t)
	var err error
	segs := conn.GetPath().GetPathSegments()
	if len(segs) != 3 || segs[0].GetName() != "client" || segs[1].GetName() != "forwarder" || segs[2].GetName() != "member-1" {
		t.Fatalf("path %v", conn.GetPath())
	}
	if conn.GetId() != "client-id" || segs[0].GetId() != "client-id" || conn.GetPath().GetIndex() != 0 {
		t.Fatalf("the client's view: id %q index %d", conn.GetId(), conn.GetPath().GetIndex())
	}
	fwdID, memberID := segs[1].GetId(), segs[2].GetId()
	if fwdID == "client-id" || memberID == fwdID || memberID == "" {
		t.Fatalf("segments must have their own IDs: %v", conn.GetPath())
	}
	want := []string{"forwarder:" + fwdID + "@1", "member-1:" + memberID + "@2"}
	if fmt.Sprint(tp.seen.requests) != fmt.Sprint(want) {
		t.Fatalf("hops saw %v, want %v", tp.seen.requests, want)
	}
	for i, lifetime := range []time.Duration{updatepath.DefaultLifetime, 2 * time.Minute, 3 * time.Minute} {
		if got := segs[i].GetExpires().AsTime(); !got.Equal(t0.Add(lifetime)) {
			t.Errorf("segment %d expires %v, want %v", i, got, t0.Add(lifetime))
		}
	}

	// A refresh keeps every ID.
	tp.seen.requests = nil
	if conn, err = tp.client.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tp.seen.requests) != fmt.Sprint(want) || conn.GetId() != "client-id" {
		t.Fatalf("refresh: hops saw %v", tp.seen.requests)
	}

	// Another member takes the connection: it sees a fresh ID, the
	// forwarder's stays.
	tp.seen.requests = nil
	conn.Labels["member"] = "member-2"
	if conn, err = tp.client.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
		t.Fatal(err)
	}
	segs = conn.GetPath().GetPathSegments()
	if segs[1].GetId() != fwdID || segs[2].GetName() != "member-2" || segs[2].GetId() == memberID {
		t.Fatalf("after the move: %v", conn.GetPath())
	}

	// Close reaches every hop with its own ID.
	if _, err := tp.client.Close(ctx, conn); err != nil {
		t.Fatal(err)
	}
	wantClose := []string{"forwarder:" + fwdID + "@1", "member-2:" + segs[2].GetId() + "@2"}
	if fmt.Sprint(tp.seen.closes) != fmt.Sprint(wantClose) {
		t.Fatalf("closes %v, want %v", tp.seen.closes, wantClose)
	}
	// (The test's router does not close member-1 on the move; connect does.)
	for name, s := range map[string]networkservice.NetworkServiceServer{"forwarder": tp.forwarder, "member-2": tp.members["member-2"]} {
		if n := s.(chain.ConnectionCounter).Connections(); n != 0 {
			t.Fatalf("%s holds %d connections", name, n)
		}
	}
}

func TestBadPaths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		conn *networkservice.Connection
		want string
	}{
		{"index out of range", &networkservice.Connection{Id: "a", Path: &networkservice.Path{Index: 2, PathSegments: []*networkservice.PathSegment{{Name: "c", Id: "a"}}}}, "path index 2 is out of its 1 segments"},
		{"ID is not the segment's", &networkservice.Connection{Id: "a", Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "c", Id: "b"}}}}, `connection ID "a" is not the ID "b" of its path segment 0`},
		{"ID is not the hop's own segment's", &networkservice.Connection{Id: "a", Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "fwd", Id: "b"}}}}, `connection ID "a" is not the ID "b" of its path segment 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := chain.NewServer(updatepath.NewServer("fwd"))
			_, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: tt.conn})
			if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != tt.want {
				t.Fatalf("got %v, want InvalidArgument %q", err, tt.want)
			}
			if srv.(chain.ConnectionCounter).Connections() != 0 {
				t.Fatal("a refused request left state")
			}
		})
	}
}

func TestNextHopWithoutPath(t *testing.T) {
	t.Parallel()
	// An endpoint that answers with a bare connection still gives the caller
	// its own view back.
	bare := chain.ServerFuncs{RequestFunc: func(_ context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextServer) (*networkservice.Connection, error) {
		return &networkservice.Connection{Id: req.GetConnection().GetId()}, nil
	}}
	cl := chain.NewClient(updatepath.NewClient("client"), chain.ClientTail(asClient{chain.NewServer(updatepath.NewServer("fwd"), bare)}))
	conn, err := cl.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(conn.GetPath().GetPathSegments()) != 2 || conn.GetPath().GetIndex() != 0 || conn.GetId() != conn.GetPath().GetPathSegments()[0].GetId() {
		t.Fatalf("the client's view was not restored: %v", conn)
	}
}

// TestCloseWithABrokenPath checks that a Close whose path does not lead to
// the hop's segment, or that has none, still reaches every hop after it,
// with the IDs of the last Request, so that nothing is left behind; and
// that such a Close of a connection the hop never had leaves no state (a
// broken path is refused; none at all goes on as a first hop's). The Close
// goes to the client chain or, as a peer might send it, to the forwarder.
func TestCloseWithABrokenPath(t *testing.T) {
	t.Parallel()
	breaks := []struct {
		name      string
		breakPath func(c *networkservice.Connection)
		refused   bool // when the hop does not know the connection
	}{
		{"index out of range", func(c *networkservice.Connection) { c.Path.Index = 7 }, true},
		{"ID is not the segment's", func(c *networkservice.Connection) { c.Path.PathSegments[0].Id = "someone-else" }, true},
		{"path cut short", func(c *networkservice.Connection) { c.Path.PathSegments, c.Path.Index = c.Path.PathSegments[:1], 3 }, true},
		{"no path", func(c *networkservice.Connection) { c.Path = nil }, false},
	}
	type closer func(tp *topology, conn *networkservice.Connection) error
	via := map[string]closer{
		"client": func(tp *topology, conn *networkservice.Connection) error {
			_, err := tp.client.Close(context.Background(), conn)
			return err
		},
		"forwarder": func(tp *topology, conn *networkservice.Connection) error {
			_, err := tp.forwarder.Close(context.Background(), conn)
			return err
		},
	}
	// counters are the chains that must hold nothing after the Close.
	counters := func(tp *topology, hop string) map[string]chain.ConnectionCounter {
		m := map[string]chain.ConnectionCounter{
			"forwarder": tp.forwarder.(chain.ConnectionCounter),
			"member-1":  tp.members["member-1"].(chain.ConnectionCounter),
		}
		if hop == "client" {
			m["client"] = tp.client.(chain.ConnectionCounter)
		}
		return m
	}
	for _, tc := range breaks {
		for hop, closeVia := range via {
			t.Run(tc.name+"/via "+hop, func(t *testing.T) {
				t.Parallel()
				tp := newTopology()
				conn := tp.connect(t)
				segs := conn.GetPath().GetPathSegments()
				fwdID, memberID := segs[1].GetId(), segs[2].GetId()

				broken := conn.Clone()
				tc.breakPath(broken)
				if err := closeVia(tp, broken.Clone()); err != nil {
					t.Fatalf("Close with a broken path: %v", err)
				}
				want := []string{"forwarder:" + fwdID + "@1", "member-1:" + memberID + "@2"}
				if fmt.Sprint(tp.seen.closes) != fmt.Sprint(want) {
					t.Fatalf("closes %v, want %v", tp.seen.closes, want)
				}
				for name, c := range counters(tp, hop) {
					if n := c.Connections(); n != 0 {
						t.Fatalf("%s holds %d connections", name, n)
					}
				}

				// Now the hop does not know the connection: the same Close
				// leaves nothing, refused when its path is broken.
				tp.seen.closes = nil
				err := closeVia(tp, broken.Clone())
				switch {
				case tc.refused && status.Code(err) != codes.InvalidArgument:
					t.Fatalf("Close of an unknown connection with a broken path: %v, want InvalidArgument", err)
				case tc.refused && len(tp.seen.closes) != 0:
					t.Fatalf("an unknown connection's refused Close went on: %v", tp.seen.closes)
				case !tc.refused && err != nil:
					t.Fatalf("Close of an unknown connection without a path: %v", err)
				}
				for name, c := range counters(tp, hop) {
					if n := c.Connections(); n != 0 {
						t.Fatalf("%s holds %d connections after the refused Close", name, n)
					}
				}
			})
		}
	}
}
