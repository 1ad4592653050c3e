package main

import (
	"context"
	"path/filepath"
	"slices"
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
	conn := connectAndCall(ctx, t, c, "via etcd")
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

// TestEtcdTLS: with an etcd that takes clients over TLS only and requires
// client certificates, a forwarder and a member given the TLS files reach
// it, and a call goes through them; settings that cannot work are refused
// at start, with a line naming the setting.
func TestEtcdTLS(t *testing.T) {
	t.Parallel()
	files := etcdtest.NewTLSFiles(t)
	endpoint := files.Start(t).URL
	fwdTLS := []string{"TETHER_VIEW_PROVIDER=etcd", "TETHER_ETCD_ENDPOINTS=" + endpoint,
		"TETHER_ETCD_CA_FILE=" + files.CA, "TETHER_ETCD_CERT_FILE=" + files.ClientCert, "TETHER_ETCD_KEY_FILE=" + files.ClientKey}
	memberTLS := []string{"-view-provider", "etcd", "-etcd-endpoints", endpoint,
		"-etcd-ca-file", files.CA, "-etcd-cert-file", files.ClientCert, "-etcd-key-file", files.ClientKey}

	t.Run("refused settings", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name   string
			env    []string
			code   int
			prefix string
		}{
			{"the files with the embedded provider", []string{"TETHER_ETCD_CA_FILE=" + files.CA}, exitConfig, "tether-forwarder: TETHER_VIEW_PROVIDER: embedded: "},
			{"the files with an http endpoint", []string{"TETHER_VIEW_PROVIDER=etcd", "TETHER_ETCD_ENDPOINTS=http://127.0.0.1:1", "TETHER_ETCD_CA_FILE=" + files.CA}, exitFailed, "tether-forwarder: TETHER_ETCD_ENDPOINTS: http://127.0.0.1:1: TLS files are set"},
			{"a certificate without its key", slices.Concat(fwdTLS[:3], []string{"TETHER_ETCD_CERT_FILE=" + files.ClientCert}), exitFailed, "tether-forwarder: TETHER_ETCD_KEY_FILE: not set"},
			{"no client certificate", fwdTLS[:3], exitFailed, "tether-forwarder: TETHER_ETCD_ENDPOINTS: " + endpoint + ": etcd does not answer"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				p := spawn(t, slices.Concat([]string{"TETHER_NAME=fwd", "TETHER_LISTEN_URL=unix://" + filepath.Join(socketDir(t), "f.sock"), "TETHER_METRICS_ADDR=127.0.0.1:0", "TETHER_DIAL_TIMEOUT=500ms"}, tc.env))
				if code := p.wait(t); code != tc.code {
					t.Errorf("exit status %d, want %d", code, tc.code)
				}
				if out := p.stderr.text(); !strings.HasPrefix(out, tc.prefix) || strings.Contains(out, "\n") {
					t.Errorf("stderr %q, want one line starting with %q", out, tc.prefix)
				}
			})
		}
	})

	t.Run("member refused settings", func(t *testing.T) {
		t.Parallel()
		dir := socketDir(t)
		for _, tc := range []struct {
			name, want string
			args       []string
		}{
			{"an http endpoint", "-etcd-endpoints: http://127.0.0.1:1: TLS files are set", []string{"-view-provider", "etcd", "-etcd-endpoints", "http://127.0.0.1:1", "-etcd-ca-file", files.CA}},
			{"a key without its certificate", "-etcd-cert-file: not set", slices.Concat(memberTLS[:6], []string{"-etcd-key-file", files.ClientKey})},
			{"the files with the embedded provider", "-etcd-ca-file, -etcd-cert-file and -etcd-key-file are for TLS to etcd", []string{"-etcd-ca-file", files.CA}},
		} {
			m := spawnMember(t, "bad", "unix://"+filepath.Join(dir, "bad.sock"), slices.Concat([]string{"-group", "echo"}, tc.args)...)
			<-m.exited
			if code := m.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(m.stderr.text(), tc.want) {
				t.Errorf("%s: exit status %d, stderr %q; want 1 and %q", tc.name, code, m.stderr.text(), tc.want)
			}
		}
	})

	t.Run("call", func(t *testing.T) {
		t.Parallel()
		dir := socketDir(t)
		p := startForwarder(t, dir, fwdTLS...)
		runMember(t, "m1", "unix://"+filepath.Join(dir, "m1.sock"), slices.Concat([]string{"-group", "echo", "-channel-providers", "tcp"}, memberTLS)...)
		c := quietClient(t, p.url)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		conn := connectAndCall(ctx, t, c, "via etcd over TLS")
		if err := conn.Close(ctx); err != nil {
			t.Fatal(err)
		}
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Fatalf("exit status %d:\n%s", code, p.stderr.text())
		}
	})
}
