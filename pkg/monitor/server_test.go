package monitor_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/monitor"
	"github.com/tether-mesh/tether/pkg/updatepath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

// serve runs a chain with the monitor on a real gRPC server on a unix
// socket and returns the chain and a monitor client.
func serve(t *testing.T, opts ...monitor.Option) (networkservice.NetworkServiceServer, networkservice.MonitorConnectionClient, monitor.Server) {
	t.Helper()
	mon := monitor.NewServer(opts...)
	srv := chain.NewServer(updatepath.NewServer("forwarder"), mon)
	path := filepath.Join(t.TempDir(), "m.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	networkservice.RegisterMonitorConnectionServer(g, mon)
	networkservice.RegisterNetworkServiceServer(g, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		g.Stop()
		<-done
	})
	return srv, networkservice.NewMonitorConnectionClient(cc), mon
}

func request(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id:   id,
		Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "client", Id: id}}},
	}}
}

// describe is an event as "TYPE id,id" with the IDs of the client segments.
func describe(ev *networkservice.ConnectionEvent) string {
	var ids []string
	for _, c := range ev.GetConnections() {
		ids = append(ids, c.GetPath().GetPathSegments()[0].GetId())
	}
	sort.Strings(ids)
	return fmt.Sprintf("%s %v", ev.GetType(), ids)
}

func recv(t *testing.T, stream networkservice.MonitorConnection_MonitorConnectionsClient) string {
	t.Helper()
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return describe(ev)
}

func TestEventsInOrder(t *testing.T) {
	srv, mc, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	a, err := srv.Request(ctx, request("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err = srv.Request(ctx, request("b")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		selector *networkservice.MonitorScopeSelector
		want     []string
	}{
		{"everything", nil, []string{"INITIAL_STATE_TRANSFER [a b]", "UPDATE [c]", "UPDATE [a]", "DELETE [a]"}},
		{"one client segment", &networkservice.MonitorScopeSelector{PathSegments: []*networkservice.PathSegment{{Id: "a"}}}, []string{"INITIAL_STATE_TRANSFER [a]", "UPDATE [a]", "DELETE [a]"}},
		{"by hop name", &networkservice.MonitorScopeSelector{PathSegments: []*networkservice.PathSegment{{Name: "client"}, {Name: "forwarder"}}}, []string{"INITIAL_STATE_TRANSFER [a b]", "UPDATE [c]", "UPDATE [a]", "DELETE [a]"}},
		{"no match", &networkservice.MonitorScopeSelector{NetworkServices: []string{"other"}}, []string{"INITIAL_STATE_TRANSFER []"}},
	}
	streams := make([]networkservice.MonitorConnection_MonitorConnectionsClient, len(tests))
	for i, tt := range tests {
		if streams[i], err = mc.MonitorConnections(ctx, tt.selector); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, streams[i]); got != tt.want[0] {
			t.Fatalf("%s: first event %q, want %q", tt.name, got, tt.want[0])
		}
	}
	// A new connection, a refresh, a Close.
	if _, err := srv.Request(ctx, request("c")); err != nil {
		t.Fatal(err)
	}
	if a, err = srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: a}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Close(ctx, a); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		for _, want := range tt.want[1:] {
			if got := recv(t, streams[i]); got != want {
				t.Fatalf("%s: event %q, want %q", tt.name, got, want)
			}
		}
	}
}

func TestUpdatesCarryTheNewState(t *testing.T) {
	srv, mc, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream, err := mc.MonitorConnections(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, stream)
	req := request("a")
	req.Connection.Mechanism = &networkservice.Mechanism{Type: "RDMA", Parameters: map[string]string{"member": "m2", "secret": "s3cr3t"}}
	if _, err := srv.Request(ctx, req); err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for id, conn := range ev.GetConnections() {
		if conn.GetMechanism().GetParameters()["secret"] != "<redacted>" {
			t.Fatalf("a monitor event carries the secret: %v", conn.GetMechanism())
		}
		if conn.GetMechanism().GetParameters()["member"] != "m2" || id != conn.GetId() || conn.GetPath().GetIndex() != 1 {
			t.Fatalf("update %s carries %v", id, conn)
		}
	}
}

// stuckStream is a MonitorConnections stream whose client never reads.
type stuckStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *networkservice.ConnectionEvent
}

func (s *stuckStream) Send(ev *networkservice.ConnectionEvent) error {
	select {
	case s.sent <- ev:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *stuckStream) Context() context.Context     { return s.ctx }
func (s *stuckStream) SetHeader(metadata.MD) error  { return nil }
func (s *stuckStream) SendHeader(metadata.MD) error { return nil }
func (s *stuckStream) SetTrailer(metadata.MD)       {}

func TestASubscriberThatFallsBehindIsDisconnected(t *testing.T) {
	const queue = 4
	srv, mc, mon := serve(t, monitor.WithQueueSize(queue))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stuck := &stuckStream{ctx: ctx, sent: make(chan *networkservice.ConnectionEvent)} // unbuffered: nobody reads
	errs := make(chan error, 1)
	go func() {
		errs <- mon.MonitorConnections(nil, stuck)
	}()
	// The subscriber is registered once its initial state goes out; then one
	// event blocks in Send while the queue fills behind it, and overflows.
	if ev := <-stuck.sent; ev.GetType() != networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER {
		t.Fatalf("first event %v", ev.GetType())
	}
	for i := range queue + 2 {
		if _, err := srv.Request(ctx, request(fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	for done := false; !done; {
		select {
		case <-stuck.sent: // events queued before the overflow may still go out
		case err = <-errs:
			done = true
		case <-time.After(testTimeout):
			t.Fatal("the slow subscriber was never disconnected")
		}
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("slow subscriber ended with %v, want ResourceExhausted", err)
	}
	if n := mon.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left", n)
	}
	// It subscribes again and receives the full state.
	stream, err := mc.MonitorConnections(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(t, stream); got != "INITIAL_STATE_TRANSFER [c0 c1 c2 c3 c4 c5]" {
		t.Fatalf("after resubscribing: %s", got)
	}
}

func TestOversizedSelector(t *testing.T) {
	_, mc, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sel := &networkservice.MonitorScopeSelector{}
	for range monitor.MaxSelectorSegments + 1 {
		sel.PathSegments = append(sel.PathSegments, &networkservice.PathSegment{Name: "x"})
	}
	stream, err := mc.MonitorConnections(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}
