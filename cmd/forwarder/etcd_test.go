package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tether-mesh/tether/internal/etcdtest"
	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/sandbox"
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
	m := &member{id: "m1", url: memberURL, stderr: newLines(), exited: make(chan struct{})}
	m.cmd = exec.Command(binary(t, sandbox.EchoMember), "-group", "echo", "-id", "m1", "-view-provider", "etcd",
		"-etcd-endpoints", endpoint, "-listen-url", memberURL, "-channel-providers", "tcp", "-log-level", "warning")
	m.cmd.Env = forwarderEnv()
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.stderr.read(stderr)
		_ = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		_ = m.cmd.Process.Kill()
		<-m.exited
	})
	m.stderr.waitFor(t, 0, `^ready `)

	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	c, err := client.Dial(p.url, client.WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
