package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestHelp: --help prints every setting with its flag, whatever the
// environment holds, and exits 0.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h"} {
		p := spawn(t, []string{"TETHER_DIAL_TIMEOUT=not-a-duration"}, arg)
		if code := p.wait(t); code != 0 {
			t.Fatalf("%s exited %d:\n%s", arg, code, p.stderr.text())
		}
		out := p.stdout.text()
		if !strings.Contains(out, "VARIABLE") || !strings.Contains(out, "DEFAULT") {
			t.Fatalf("%s prints no table:\n%s", arg, out)
		}
		for env, flag := range documented {
			if !strings.Contains(out, env) || !strings.Contains(out, flag) {
				t.Errorf("%s does not show %s (%s):\n%s", arg, env, flag, out)
			}
		}
	}
}

// TestBadConfiguration: each setting that cannot be used stops the
// forwarder before it serves, with one line naming the setting and a
// non-zero exit status, and leaves no socket behind.
func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	type setup func(t *testing.T, dir string) []string
	none := func(*testing.T, string) []string { return nil }
	env := func(kv ...string) setup { return func(*testing.T, string) []string { return kv } }
	for _, tc := range []struct {
		name  string
		setup setup
		args  []string
		want  string // the line after "tether-forwarder: "
	}{
		{"bad duration", env("TETHER_DIAL_TIMEOUT=soon"), nil, `TETHER_DIAL_TIMEOUT: soon: want a positive duration`},
		{"negative duration", env("TETHER_DIAL_TIMEOUT=-2s"), nil, `TETHER_DIAL_TIMEOUT: -2s: want a positive duration`},
		{"unknown policy", env("TETHER_SELECTION_POLICY=random"), nil, `TETHER_SELECTION_POLICY: random: want primary, rendezvous or least-connections`},
		{"bad URL scheme", env("TETHER_LISTEN_URL=http://localhost:80"), nil, `TETHER_LISTEN_URL: http://localhost:80: want unix:///absolute/path or tcp://host:port`},
		{"relative socket", env("TETHER_LISTEN_URL=unix://forwarder.sock"), nil, `TETHER_LISTEN_URL: unix://forwarder.sock: want unix:///absolute/path`},
		{"bad socket mode", env("TETHER_SOCKET_MODE=0999"), nil, `TETHER_SOCKET_MODE: 0999: want octal permission bits`},
		{"unknown provider", env("TETHER_VIEW_PROVIDER=consul"), nil, `TETHER_VIEW_PROVIDER: consul: want embedded or etcd`},
		{"etcd without endpoints", env("TETHER_VIEW_PROVIDER=etcd"), nil, `TETHER_ETCD_ENDPOINTS: required with TETHER_VIEW_PROVIDER=etcd`},
		{"etcd endpoint without scheme", env("TETHER_ETCD_ENDPOINTS=etcd:2379"), nil, `TETHER_ETCD_ENDPOINTS: etcd:2379: "etcd:2379": want http://host:port`},
		{"bad log level", env("TETHER_LOG_LEVEL=loud"), nil, `TETHER_LOG_LEVEL: loud: want panic, fatal, error, warn, info, debug or trace`},
		{"bad log format", env("TETHER_LOG_FORMAT=xml"), nil, `TETHER_LOG_FORMAT: xml: want text or json`},
		{"bad metrics address", env("TETHER_METRICS_ADDR=9090"), nil, `TETHER_METRICS_ADDR: 9090: want host:port or :port`},
		{"bad pprof", env("TETHER_PPROF=maybe"), nil, `TETHER_PPROF: maybe: want true or false`},
		{"half of mTLS", env("TETHER_TLS_CERT_FILE=/etc/tether/tls.crt"), nil, `TETHER_TLS_KEY_FILE: mTLS needs the certificate, key and CA files: set all three or none`},
		{"bad TLS members", env("TETHER_TLS_MEMBERS=maybe"), nil, `TETHER_TLS_MEMBERS: maybe: want true or false`},
		{"missing TLS files", env("TETHER_TLS_CERT_FILE=/nonexistent/tls.crt", "TETHER_TLS_KEY_FILE=/nonexistent/tls.key", "TETHER_TLS_CA_FILE=/nonexistent/ca.crt"), nil, `TETHER_TLS_CERT_FILE: /nonexistent/tls.crt: no such file or directory`},
		{"bad flag value", none, []string{"--dial-timeout=soon"}, `--dial-timeout: soon: want a positive duration`},
		{"flag wins over a good variable", env("TETHER_LOG_FORMAT=json"), []string{"--log-format", "yaml"}, `--log-format: yaml: want text or json`},
		{"unknown flag", none, []string{"--listen"}, `flag provided but not defined: -listen (see --help)`},
		{"stray argument", none, []string{"serve"}, `unexpected argument "serve" (see --help)`},
		{"live socket", func(t *testing.T, dir string) []string {
			sock := filepath.Join(dir, "live.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			return []string{"TETHER_LISTEN_URL=unix://" + sock}
		}, nil, `TETHER_LISTEN_URL: unix://DIR/live.sock: another process serves there`},
		{"not a socket", func(t *testing.T, dir string) []string {
			path := filepath.Join(dir, "file")
			if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"TETHER_LISTEN_URL=unix://" + path}
		}, nil, `TETHER_LISTEN_URL: unix://DIR/file: a file that is not a socket is in the way`},
		{"no socket directory", env("TETHER_LISTEN_URL=unix:///nonexistent/tether/f.sock"), nil, `TETHER_LISTEN_URL: unix:///nonexistent/tether/f.sock: the directory /nonexistent/tether does not exist`},
		{"TCP port in use", func(t *testing.T, _ string) []string {
			return []string{"TETHER_LISTEN_URL=tcp://" + busyPort(t)}
		}, nil, `TETHER_LISTEN_URL: tcp://ADDR: the address is in use`},
		{"metrics port in use", func(t *testing.T, _ string) []string {
			return []string{"TETHER_METRICS_ADDR=" + busyPort(t)}
		}, nil, `TETHER_METRICS_ADDR: ADDR: the address is in use`},
		{"unreachable etcd", func(t *testing.T, _ string) []string {
			return []string{"TETHER_VIEW_PROVIDER=etcd", "TETHER_ETCD_ENDPOINTS=http://" + freePort(t), "TETHER_DIAL_TIMEOUT=300ms"}
		}, nil, `TETHER_ETCD_ENDPOINTS: http://ADDR: etcd does not answer within 300ms`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := socketDir(t)
			sock := filepath.Join(dir, "forwarder.sock")
			env := append([]string{"TETHER_NAME=fwd", "TETHER_LISTEN_URL=unix://" + sock, "TETHER_METRICS_ADDR=127.0.0.1:0"}, tc.setup(t, dir)...)
			p := spawn(t, env, tc.args...)
			code := p.wait(t)
			if code == 0 {
				t.Fatalf("exit 0 with a bad setting; stderr:\n%s", p.stderr.text())
			}
			out := p.stderr.snapshot()
			if len(out) != 1 {
				t.Fatalf("want one line on stderr, got %d:\n%s", len(out), p.stderr.text())
			}
			want := "tether-forwarder: " + strings.ReplaceAll(tc.want, "DIR", dir)
			if i := strings.Index(want, "ADDR"); i >= 0 {
				// The address comes from the environment given.
				want = want[:i]
			}
			if !strings.HasPrefix(out[0], want) {
				t.Fatalf("stderr:\n%s\nwant it to start with:\n%s", out[0], want)
			}
			if strings.Contains(p.stdout.text(), "ready") {
				t.Fatalf("it said ready:\n%s", p.stdout.text())
			}
			if _, err := os.Lstat(sock); err == nil {
				t.Fatalf("the socket %s was left behind", sock)
			}
		})
	}
}

// busyPort returns a TCP address the test listens on.
func busyPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

// freePort returns a TCP address nobody listens on (refused).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestGracefulStop: on SIGTERM the forwarder closes its connections at the
// members, ends the members' sessions, removes its socket and exits 0.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	p := startForwarder(t, dir)
	m := startMember(t, dir, p.url, "echo", "m1")

	c := quietClient(t, p.url)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn := connectAndCall(ctx, t, c, "before")

	// What the member sees of its connections.
	events := monitor(t, m.url)
	initial, err := events.Recv()
	if err != nil || len(initial.GetConnections()) != 1 {
		t.Fatalf("the member holds %v, %v; want one connection", initial.GetConnections(), err)
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", code, p.stderr.text())
	}
	for {
		ev, err := events.Recv()
		if err != nil {
			t.Fatalf("the member's monitor: %v", err)
		}
		if ev.GetType() == networkservice.ConnectionEventType_DELETE {
			break // the forwarder closed the connection at the member
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "forwarder.sock")); !os.IsNotExist(err) {
		t.Fatalf("the socket is still there: %v", err)
	}
	m.stderr.waitFor(t, 0, `membership lost`) // the member's session ended
	p.stderr.waitFor(t, 0, `msg=stopped connections_closed=1`)
	_ = conn.Close(ctx) // the forwarder is gone: nothing to close there
}

// TestRestartAfterKill: a forwarder killed with SIGKILL leaves its socket
// behind; the next one replaces it and serves.
func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	sock := filepath.Join(dir, "forwarder.sock")
	first := startForwarder(t, dir)
	first.signal(t, syscall.SIGKILL)
	first.wait(t)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket after SIGKILL: %v", err)
	}
	second := startForwarder(t, dir, "TETHER_LOG_FORMAT=json")
	startMember(t, dir, second.url, "echo", "m1") // it serves
	second.stderr.waitFor(t, 0, `^\{.*"msg":"forwarder ready"`)
	second.signal(t, syscall.SIGINT)
	if code := second.wait(t); code != 0 {
		t.Fatalf("exit status %d after SIGINT:\n%s", code, second.stderr.text())
	}
}

// TestLogLevelSignals: SIGUSR1 turns on debug logging, with the chain's
// element-by-element log; SIGUSR2 turns it off again.
func TestLogLevelSignals(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	p := startForwarder(t, dir)
	if code, _ := get(t, p.metrics, "/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without TETHER_PPROF: %d", code)
	}
	ns := networkservice.NewNetworkServiceClient(dial(t, p.url))
	request := func(id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		// A group without members: the request fails at view refresh.
		_, err := ns.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id, NetworkService: "nobody"}})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("request for a group without members: %v", err)
		}
	}
	const chainDebug = `level=debug .*conn_id=%s element=`

	p.signal(t, syscall.SIGUSR1)
	raised, _ := p.stderr.waitFor(t, 0, `log level raised to debug`)
	request("debug-1")
	p.stderr.waitFor(t, raised, fmt.Sprintf(chainDebug, "debug-1"))

	p.signal(t, syscall.SIGUSR2)
	restored, _ := p.stderr.waitFor(t, raised, `log level restored`)
	request("info-1")
	// A second SIGUSR2 writes a line after everything the request logged.
	p.signal(t, syscall.SIGUSR2)
	fence, _ := p.stderr.waitFor(t, restored+1, `log level restored`)
	for _, line := range p.stderr.snapshot()[restored:fence] {
		if strings.Contains(line, "level=debug") {
			t.Fatalf("a debug line after SIGUSR2: %s", line)
		}
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr.text())
	}
}
