// Package e2e runs connections end to end: a client (the client library),
// a forwarder chain served over gRPC on a unix socket, and a group of three
// members, each a separate OS process built from examples/echo-member
// (in-process where the inproc channel provider requires it).
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/inproc"
	"github.com/tether-mesh/tether/pkg/rdma/shm"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
	"github.com/tether-mesh/tether/pkg/sandbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var providers = []struct {
	name string
	make func() rdma.Provider
}{
	{"inproc", func() rdma.Provider { return inproc.New() }},
	{"shm", func() rdma.Provider { return shm.New() }},
	{"tcp", func() rdma.Provider { return tcp.New() }},
}

// group starts a forwarder and three members of "echo" offering provider.
func group(t *testing.T, provider string, opts ...sandbox.ForwarderOption) (*sandbox.Sandbox, *sandbox.Forwarder) {
	t.Helper()
	sb := sandbox.New(t)
	fwd := sb.Forwarder(opts...)
	for i := range 3 {
		sb.Member(fwd, "echo", fmt.Sprintf("m%d", i+1), sandbox.WithChannels(provider))
	}
	sb.WaitMembers(fwd, "echo", 3)
	return sb, fwd
}

func TestEndToEnd(t *testing.T) {
	for _, p := range providers {
		t.Run(p.name, func(t *testing.T) {
			sb, fwd := group(t, p.name)
			// A short lifetime makes the client refresh every ~100 ms.
			channelMetrics := metrics.NewChannels()
			c := sb.Client(fwd, client.WithProviders(p.make()), client.WithLifetime(300*time.Millisecond), client.WithChannelMetrics(channelMetrics))
			ctx := sb.Context()
			conn, err := c.Connect(ctx, "echo")
			if err != nil {
				t.Fatal(err)
			}
			member := sb.Members()[conn.Member()]
			if member == nil || conn.ViewID() == "" {
				t.Fatalf("connected to %q in view %q", conn.Member(), conn.ViewID())
			}
			for i := range 20 {
				want := fmt.Sprint("ping ", i)
				reply, err := conn.Call(ctx, []byte(want))
				if err != nil || string(reply) != want {
					t.Fatalf("call %d: %q %v", i, reply, err)
				}
			}
			if st := conn.Stats(); st.Provider != p.name {
				t.Fatalf("channel over %s, want %s", st.Provider, p.name)
			}
			sent := testutil.ToFloat64(channelMetrics.Provider(p.name).Messages(metrics.DirectionSent))
			received := testutil.ToFloat64(channelMetrics.Provider(p.name).Messages(metrics.DirectionReceived))
			if sent != 20 || received != 20 {
				t.Fatalf("channel metrics: %v sent, %v received, want 20 and 20", sent, received)
			}

			// Refreshes keep the channel: wait for several at the forwarder.
			refreshes := watchUpdates(t, sb, fwd, c.Name(), 4)
			if err := <-refreshes; err != nil {
				t.Fatal(err)
			}
			if reply, err := conn.Call(ctx, []byte("after refreshes")); err != nil || string(reply) != "after refreshes" {
				t.Fatalf("after refreshes: %q %v", reply, err)
			}
			if st := conn.Stats(); st.Binds != 1 {
				t.Fatalf("refreshes rebound the channel: %d binds", st.Binds)
			}
			traces := member.WaitTrace(func(tr []sandbox.Trace) bool { return len(tr) >= 21 })
			if len(traces) != 21 {
				t.Fatalf("the member handled %d messages, want 21", len(traces))
			}

			// Close releases everything on all three sides.
			if err := conn.Close(ctx); err != nil {
				t.Fatal(err)
			}
			fwd.WaitConnections(0)
			for id, m := range sb.Members() {
				m.WaitConnections(0)
				if conns, err := m.Connections(); err != nil || len(conns) != 0 {
					t.Fatalf("member %s holds %v (%v)", id, conns, err)
				}
			}
			if n := fwd.Connections(); n != 0 {
				t.Fatalf("the forwarder's chain holds %d connections", n)
			}
		})
	}
}

// watchUpdates reports, on the returned channel, once the forwarder's
// monitor has sent n UPDATE events for the client's connections.
func watchUpdates(t *testing.T, sb *sandbox.Sandbox, fwd *sandbox.Forwarder, clientName string, n int) <-chan error {
	t.Helper()
	cc, err := grpc.NewClient(fwd.URL(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(sb.Context(), sb.Timeout())
	stream, err := networkservice.NewMonitorConnectionClient(cc).MonitorConnections(ctx, &networkservice.MonitorScopeSelector{
		PathSegments: []*networkservice.PathSegment{{Name: clientName}},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		defer cc.Close()
		defer cancel()
		seen := 0
		for seen < n {
			ev, err := stream.Recv()
			if err != nil {
				done <- fmt.Errorf("after %d updates: %w", seen, err)
				return
			}
			if ev.GetType() == networkservice.ConnectionEventType_UPDATE {
				seen++
			}
		}
		done <- nil
	}()
	return done
}

func TestAStolenConnectionIDIsRefused(t *testing.T) {
	for _, p := range providers[1:] { // the providers that cross processes
		t.Run(p.name, func(t *testing.T) {
			sb, fwd := group(t, p.name)
			c := sb.Client(fwd, client.WithProviders(p.make()))
			conn, err := c.Connect(sb.Context(), "echo")
			if err != nil {
				t.Fatal(err)
			}
			// What anyone who can watch the member learns: its connection's
			// ID and channel address, never its secret.
			conns, err := sb.Members()[conn.Member()].Connections()
			if err != nil || len(conns) != 1 {
				t.Fatalf("member connections %v %v", conns, err)
			}
			for _, mc := range conns {
				params := mc.GetMechanism().GetParameters()
				if params[rdma.ParamSecret] != "<redacted>" {
					t.Fatalf("the member's monitor shows the secret: %q", params[rdma.ParamSecret])
				}
				ctx, cancel := context.WithTimeout(sb.Context(), 5*time.Second)
				ch, err := p.make().Dial(ctx, params[rdma.ParamAddress], params[rdma.ParamConnID], rdma.NewSecret())
				cancel()
				if err == nil {
					_ = ch.Close()
					t.Fatal("a channel attached with a stolen connection ID and a guessed secret")
				}
				if !errors.Is(err, rdma.ErrAuth) {
					t.Fatalf("refused with %v, want ErrAuth", err)
				}
			}
			// The rightful channel still works.
			if reply, err := conn.Call(sb.Context(), []byte("still mine")); err != nil || string(reply) != "still mine" {
				t.Fatalf("%q %v", reply, err)
			}
		})
	}
}

func TestAVanishedClientLeavesNothing(t *testing.T) {
	const lifetime = 600 * time.Millisecond
	sb, fwd := group(t, "shm")
	bin, err := sandbox.Binary(sb.Context(), "github.com/tether-mesh/tether/examples/echo-client")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-forwarder-url", fwd.URL(), "-group", "echo", "-n", "2", "-hold", "-lifetime", lifetime.String(), "-channel-providers", "shm")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var got strings.Builder
	for !strings.Contains(got.String(), "holding") {
		n, err := out.Read(buf)
		if err != nil {
			t.Fatalf("the client did not connect: %q %v", got.String(), err)
		}
		got.Write(buf[:n])
	}
	fwd.WaitConnections(1)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// Nobody refreshes the connection any more: the forwarder closes it when
	// its expiry passes, and with it the member's.
	fwd.WaitConnections(0)
	for _, m := range sb.Members() {
		m.WaitConnections(0)
	}
	if n := fwd.Connections(); n != 0 {
		t.Fatalf("the forwarder's chain holds %d connections", n)
	}
}

// forwarderStub returns the forwarder's NetworkService over its socket, as a
// client that uses none of tether's elements has it; closed at the test's
// end.
func forwarderStub(t *testing.T, fwd *sandbox.Forwarder) networkservice.NetworkServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(fwd.URL(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return networkservice.NewNetworkServiceClient(cc)
}

func TestBadRequests(t *testing.T) {
	sb, fwd := group(t, "tcp")
	stub := forwarderStub(t, fwd)
	tcpPref := rdma.Preference("tcp")
	tests := []struct {
		name string
		req  *networkservice.NetworkServiceRequest
		code codes.Code
		says string
	}{
		{"unknown group", &networkservice.NetworkServiceRequest{
			Connection:           &networkservice.Connection{Id: "c1", NetworkService: "nobody"},
			MechanismPreferences: []*networkservice.Mechanism{tcpPref},
		}, codes.Unavailable, "nobody"},
		{"no mechanism in common", &networkservice.NetworkServiceRequest{
			Connection:           &networkservice.Connection{Id: "c2", NetworkService: "echo"},
			MechanismPreferences: []*networkservice.Mechanism{{Type: rdma.MechanismType, Cls: "REMOTE", Parameters: map[string]string{rdma.ParamProvider: "carrier-pigeon"}}},
		}, codes.FailedPrecondition, "supports RDMA with providers [tcp]"},
		{"empty ID", &networkservice.NetworkServiceRequest{
			Connection:           &networkservice.Connection{NetworkService: "echo"},
			MechanismPreferences: []*networkservice.Mechanism{tcpPref},
		}, codes.InvalidArgument, "connection ID is empty"},
		{"no connection", &networkservice.NetworkServiceRequest{}, codes.InvalidArgument, "request has no connection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := stub.Request(sb.Context(), tt.req)
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.says) {
				t.Fatalf("got %v, want %v saying %q", err, tt.code, tt.says)
			}
			if n := fwd.Connections(); n != 0 {
				t.Fatalf("the forwarder holds %d connections", n)
			}
			for id, m := range sb.Members() {
				if conns, err := m.Connections(); err != nil || len(conns) != 0 {
					t.Fatalf("member %s holds %v (%v)", id, conns, err)
				}
			}
		})
	}
}
