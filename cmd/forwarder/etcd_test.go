package main

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tether-mesh/tether/internal/etcdtest"
)

// startEtcd starts a one-node etcd; stop halts it at once (see
// etcdtest.Server.HardStop).
func startEtcd(t *testing.T) (endpoint string, stop func()) {
	t.Helper()
	s := etcdtest.Start(t)
	return s.URL, s.HardStop
}

// TestEtcdViews: with views in etcd, members register there directly and
// the forwarder routes to them; when etcd stops answering, the forwarder
// is not ready (/readyz and gRPC health) until it stops.
func TestEtcdViews(t *testing.T) {
	t.Parallel()
	endpoint, stopEtcd := startEtcd(t)
	dir := socketDir(t)
	p := startForwarder(t, dir, "TETHER_VIEW_PROVIDER=etcd", "TETHER_ETCD_ENDPOINTS="+endpoint, "TETHER_DIAL_TIMEOUT=500ms")

	// A member that registers in etcd, not through the forwarder.
	memberURL := "unix://" + filepath.Join(dir, "m1.sock")
	runMember(t, "m1", memberURL, "-group", "echo", "-view-provider", "etcd", "-etcd-endpoints", endpoint, "-channel-providers", "tcp")

	c := quietClient(t, p.url)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.Connect(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.Call(ctx, []byte("via etcd")); err != nil || string(reply) != "via etcd" {
		t.Fatalf("call: %q, %v", reply, err)
	}
	got := scrape(t, p.metrics)
	if got[`tether_view_members{group="echo"}`] != 1 || got[`tether_forwarder_connections`] != 1 {
		t.Fatalf("members %v, connections %v; want 1 and 1", got[`tether_view_members{group="echo"}`], got[`tether_forwarder_connections`])
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// etcd stops: not ready, and gRPC health says so.
	health, err := healthpb.NewHealthClient(dial(t, p.url)).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := health.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v, %v", st, err)
	}
	stopEtcd()
	code, body := get(t, p.metrics, "/readyz")
	if code != 503 || !strings.Contains(body, "view provider etcd") {
		t.Fatalf("/readyz with etcd down: %d %q", code, body)
	}
	if st, err := health.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health with etcd down: %v, %v", st, err)
	}
	if code, _ := get(t, p.metrics, "/healthz"); code != 200 {
		t.Fatalf("/healthz with etcd down: %d", code)
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr.text())
	}
}
