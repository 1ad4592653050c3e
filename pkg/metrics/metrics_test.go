package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
)

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.WarnLevel)
	goleak.VerifyTestMain(m)
}

// fakeChannel is the part of a channel the counters see.
type fakeChannel struct {
	rdma.Channel
	fail bool
}

func (f *fakeChannel) Provider() string { return "shm" }

func (f *fakeChannel) Send(_ context.Context, m *rdma.Message) (uint64, error) {
	if f.fail {
		return 0, rdma.ErrClosed
	}
	return 1, nil
}

func (f *fakeChannel) Recv(_ context.Context, m *rdma.Message) error {
	if f.fail {
		return rdma.ErrClosed
	}
	m.Header, m.Payload = []byte("hh"), []byte("payload")
	return nil
}

func (f *fakeChannel) Write(_ context.Context, _ rdma.RegionKey, _ uint64, data []byte) (uint64, error) {
	if f.fail {
		return 0, rdma.ErrClosed
	}
	return 2, nil
}

func (f *fakeChannel) ConnID() string { return "conn-1" }

func TestChannels(t *testing.T) {
	t.Parallel()
	c := metrics.NewChannels()
	ctx := context.Background()
	ch := c.Wrap(&fakeChannel{})
	if ch.ConnID() != "conn-1" || ch.Provider() != "shm" {
		t.Fatalf("the wrapper does not pass through: %q %q", ch.ConnID(), ch.Provider())
	}
	for range 3 {
		if _, err := ch.Send(ctx, &rdma.Message{Header: []byte("h"), Payload: []byte("hello")}); err != nil {
			t.Fatal(err)
		}
	}
	var m rdma.Message
	if err := ch.Recv(ctx, &m); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Write(ctx, 1, 0, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	broken := c.Wrap(&fakeChannel{fail: true})
	_, _ = broken.Send(ctx, &rdma.Message{Payload: []byte("lost")})
	_ = broken.Recv(ctx, &m)
	_, _ = broken.Write(ctx, 1, 0, []byte("lost"))

	want := `
# HELP tether_channel_bytes_total Header and payload bytes of the messages and one-sided writes counted by tether_channel_messages_total.
# TYPE tether_channel_bytes_total counter
tether_channel_bytes_total{direction="received",provider="shm"} 9
tether_channel_bytes_total{direction="sent",provider="shm"} 18
tether_channel_bytes_total{direction="written",provider="shm"} 100
# HELP tether_channel_messages_total Messages sent and received, and one-sided writes made, on peer-to-peer channels, by channel provider.
# TYPE tether_channel_messages_total counter
tether_channel_messages_total{direction="received",provider="shm"} 1
tether_channel_messages_total{direction="sent",provider="shm"} 3
tether_channel_messages_total{direction="written",provider="shm"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Counting without a wrapper.
	tcp := c.Provider("tcp")
	tcp.Sent(10)
	tcp.Received(20)
	want = `
# HELP tether_channel_bytes_total Header and payload bytes of the messages and one-sided writes counted by tether_channel_messages_total.
# TYPE tether_channel_bytes_total counter
tether_channel_bytes_total{direction="received",provider="shm"} 9
tether_channel_bytes_total{direction="received",provider="tcp"} 20
tether_channel_bytes_total{direction="sent",provider="shm"} 18
tether_channel_bytes_total{direction="sent",provider="tcp"} 10
tether_channel_bytes_total{direction="written",provider="shm"} 100
tether_channel_bytes_total{direction="written",provider="tcp"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "tether_channel_bytes_total"); err != nil {
		t.Fatal(err)
	}
}

func TestGRPC(t *testing.T) {
	t.Parallel()
	g := metrics.NewGRPC("forwarder")
	unary := g.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/networkservice.NetworkService/Request"}
	ok := func(context.Context, any) (any, error) { return "ok", nil }
	bad := func(context.Context, any) (any, error) { return nil, status.Error(codes.Unavailable, "no member") }
	for range 2 {
		if _, err := unary(context.Background(), nil, info, ok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := unary(context.Background(), nil, info, bad); status.Code(err) != codes.Unavailable {
		t.Fatalf("the interceptor changed the error: %v", err)
	}
	stream := g.StreamServerInterceptor()
	err := stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/connection.MonitorConnection/MonitorConnections"},
		func(any, grpc.ServerStream) error { return errors.New("plain error") })
	if err == nil {
		t.Fatal("the interceptor swallowed the error")
	}
	want := `
# HELP tether_forwarder_requests_total gRPC calls handled, by service, method and status code (errors are the codes other than OK).
# TYPE tether_forwarder_requests_total counter
tether_forwarder_requests_total{code="OK",method="Request",service="networkservice.NetworkService"} 2
tether_forwarder_requests_total{code="Unavailable",method="Request",service="networkservice.NetworkService"} 1
tether_forwarder_requests_total{code="Unknown",method="MonitorConnections",service="connection.MonitorConnection"} 1
`
	if err := testutil.CollectAndCompare(g, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestHeals(t *testing.T) {
	t.Parallel()
	h := metrics.NewHeals("forwarder", "view", "reselect")
	h.Observe("view", 3*time.Millisecond)
	h.Observe("view", 20*time.Second)
	if n := testutil.CollectAndCount(h, "tether_forwarder_heals_total"); n != 2 {
		t.Fatalf("%d heal series, want one per cause", n)
	}
	want := `
# HELP tether_forwarder_heals_total Connections healed: moved to another member after theirs failed or left, by cause.
# TYPE tether_forwarder_heals_total counter
tether_forwarder_heals_total{cause="reselect"} 0
tether_forwarder_heals_total{cause="view"} 2
`
	if err := testutil.CollectAndCompare(h, strings.NewReader(want), "tether_forwarder_heals_total"); err != nil {
		t.Fatal(err)
	}
}

func TestViews(t *testing.T) {
	t.Parallel()
	p := embedded.New()
	defer p.Close()
	ctx := context.Background()
	v := metrics.NewViews(p)
	if n := testutil.CollectAndCount(v); n != 0 {
		t.Fatalf("%d series before any group is tracked", n)
	}

	// A group tracked by hand: its view is read from the provider.
	release := v.Track("a")
	ms, err := p.Join(ctx, "a", view.Member{ID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `
# HELP tether_view_installed_total Views installed in each group this process follows, as its view provider counts them.
# TYPE tether_view_installed_total counter
tether_view_installed_total{group="a"} 1
# HELP tether_view_members Members in the current view of each group this process follows.
# TYPE tether_view_members gauge
tether_view_members{group="a"} 1
`
	if err := testutil.CollectAndCompare(v, strings.NewReader(want), "tether_view_members", "tether_view_installed_total"); err != nil {
		t.Fatal(err)
	}

	// A group tracked by a watch: its members come from the views it delivers.
	w, err := v.Provider().Watch(ctx, "b", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Join(ctx, "b", view.Member{ID: "m2"}); err != nil {
		t.Fatal(err)
	}
	if got, err := w.Next(ctx); err != nil || len(got.Members) != 1 {
		t.Fatalf("view %v, %v", got, err)
	}
	// The last member of "a" leaves: the embedded provider forgets a group
	// without members or watchers, and its counters start again.
	if err := ms.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	want = `
# HELP tether_view_member_events_total Members that joined, left, expired (lease) or failed (connection broke) in each group this process follows.
# TYPE tether_view_member_events_total counter
tether_view_member_events_total{event="expiry",group="a"} 0
tether_view_member_events_total{event="expiry",group="b"} 0
tether_view_member_events_total{event="failure",group="a"} 0
tether_view_member_events_total{event="failure",group="b"} 0
tether_view_member_events_total{event="join",group="a"} 0
tether_view_member_events_total{event="join",group="b"} 1
tether_view_member_events_total{event="leave",group="a"} 0
tether_view_member_events_total{event="leave",group="b"} 0
# HELP tether_view_members Members in the current view of each group this process follows.
# TYPE tether_view_members gauge
tether_view_members{group="a"} 0
tether_view_members{group="b"} 1
`
	if err := testutil.CollectAndCompare(v, strings.NewReader(want), "tether_view_members", "tether_view_member_events_total"); err != nil {
		t.Fatal(err)
	}

	// Untracked groups disappear.
	release()
	release()
	w.Close()
	w.Close()
	if n := testutil.CollectAndCount(v); n != 0 {
		t.Fatalf("%d series after every group was released", n)
	}
}
