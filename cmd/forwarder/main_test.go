package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/sandbox"
)

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.WarnLevel)
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait of these tests.
const timeout = 20 * time.Second

const forwarderPkg = "github.com/tether-mesh/tether/cmd/forwarder"

// binary builds a main package of the module once per test process.
func binary(t testing.TB, pkg string) string {
	t.Helper()
	bin, err := sandbox.Binary(context.Background(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// socketDir returns a fresh directory with a short path (a unix socket path
// has at most 107 bytes), removed at the end of the test.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tfw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// lines collects the lines of a process's output and lets a test wait for
// one.
type lines struct {
	mu      sync.Mutex
	all     []string
	changed chan struct{} // closed and replaced at every line, and at the end
	ended   bool
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.ended = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Write lets an in-process forwarder log into lines.
func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

func (l *lines) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// waitFor returns the index and text of the first line at or after from
// that matches re, failing the test after the timeout or when the output
// ends without one.
func (l *lines) waitFor(t testing.TB, from int, re string) (int, string) {
	t.Helper()
	pattern := regexp.MustCompile(re)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i := from; i < len(l.all); i++ {
			if line := l.all[i]; pattern.MatchString(line) {
				l.mu.Unlock()
				return i, line
			}
		}
		changed, ended := l.changed, l.ended
		l.mu.Unlock()
		if ended {
			t.Fatalf("the output ended without a line matching %q:\n%s", re, l.text())
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no line matching %q in %v:\n%s", re, timeout, l.text())
		}
	}
}

// proc is a forwarder running as a child process.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *lines
	exited         chan struct{}
	state          *os.ProcessState
	// url and metrics are where it serves, once it printed them.
	url, metrics string
}

// forwarderEnv is the environment of a child forwarder: the test's, without
// its TETHER_ variables, and env.
func forwarderEnv(env ...string) []string {
	out := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TETHER_") })
	return append(out, env...)
}

// spawn starts the forwarder binary with env and args, without waiting.
func spawn(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t, forwarderPkg), args...)
	cmd.Env = forwarderEnv(env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdout: newLines(), stderr: newLines(), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); p.stdout.read(stdout) }()
	go func() { defer pipes.Done(); p.stderr.read(stderr) }()
	go func() {
		pipes.Wait()
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// startForwarder starts a forwarder on a socket in dir with metrics on a
// free port, and waits until its gRPC health says SERVING.
func startForwarder(t testing.TB, dir string, env ...string) *proc {
	t.Helper()
	env = append([]string{
		"TETHER_NAME=fwd", "TETHER_LISTEN_URL=unix://" + filepath.Join(dir, "forwarder.sock"),
		"TETHER_METRICS_ADDR=127.0.0.1:0",
	}, env...)
	p := spawn(t, env)
	p.waitReady(t)
	return p
}

// waitReady reads the addresses the forwarder prints and waits for SERVING,
// dialing with opts (credentials for mTLS).
func (p *proc) waitReady(t testing.TB, opts ...grpc.DialOption) {
	t.Helper()
	_, line := p.stdout.waitFor(t, 0, `^listening `)
	p.url = strings.TrimPrefix(line, "listening ")
	_, line = p.stdout.waitFor(t, 0, `^metrics `)
	p.metrics = strings.TrimPrefix(line, "metrics ")
	waitServing(t, p.url, opts...)
}

// waitServing watches the gRPC health of the forwarder at url until it
// reports SERVING.
func waitServing(t testing.TB, url string, opts ...grpc.DialOption) {
	t.Helper()
	cc := dial(t, url, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

// dial returns a gRPC connection to url (insecure unless opts say
// otherwise), closed at the end of the test.
func dial(t testing.TB, url string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	target := strings.Replace(url, "tcp://", "passthrough:///", 1)
	cc, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("the forwarder did not exit in %v:\n%s", timeout, p.stderr.text())
		return -1
	}
}

// samples are the samples of one scrape, by series ("name{a="x",b="y"}",
// labels sorted by name).
type samples map[string]float64

func scrape(t testing.TB, addr string) samples {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := samples{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out[key] = value(f.GetType(), m)
		}
	}
	return out
}

func value(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

// get fetches a path of the metrics address and returns the status code
// and body.
func get(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// member is an echo member running as a child process.
type member struct {
	id, url string
	cmd     *exec.Cmd
	stderr  *lines
	exited  chan struct{}
}

// startMember starts an echo member of group joining through the forwarder
// at forwarderURL, and waits until it joined.
func startMember(t testing.TB, dir, forwarderURL, group, id string) *member {
	t.Helper()
	url := "unix://" + filepath.Join(dir, id+".sock")
	return runMember(t, id, url, "-group", group, "-view-provider", "embedded", "-forwarder-url", forwarderURL,
		"-channel-providers", "shm,tcp", "-shm-dir", dir)
}

// runMember starts the echo member id listening at url, with args for
// the rest of its flags, and waits until it is ready. It is killed when
// the test ends.
func runMember(t testing.TB, id, url string, args ...string) *member {
	t.Helper()
	m := spawnMember(t, id, url, args...)
	m.stderr.waitFor(t, 0, `^ready `)
	return m
}

// spawnMember starts the echo member id listening at url, with args for
// the rest of its flags, without waiting. It is killed when the test ends.
func spawnMember(t testing.TB, id, url string, args ...string) *member {
	t.Helper()
	m := &member{id: id, url: url, stderr: newLines(), exited: make(chan struct{})}
	m.cmd = exec.Command(binary(t, sandbox.EchoMember), append([]string{"-id", id, "-listen-url", url, "-log-level", "warning"}, args...)...)
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
	return m
}

// quietClient dials the forwarder at url with a client that logs nothing;
// it is closed when the test ends.
func quietClient(t testing.TB, url string) *client.Client {
	t.Helper()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	c, err := client.Dial(url, client.WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// connectAndCall connects c to the group echo and makes one call of
// payload, which the echo member must return.
func connectAndCall(ctx context.Context, t testing.TB, c *client.Client, payload string) *client.Conn {
	t.Helper()
	conn, err := c.Connect(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.Call(ctx, []byte(payload)); err != nil || string(reply) != payload {
		t.Fatalf("call: %q, %v", reply, err)
	}
	return conn
}

// kill SIGKILLs the member and waits for it to exit.
func (m *member) kill(t testing.TB) {
	t.Helper()
	if err := m.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-m.exited
}

// monitor subscribes to the MonitorConnection service at url.
func monitor(t testing.TB, url string) networkservice.MonitorConnection_MonitorConnectionsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := networkservice.NewMonitorConnectionClient(dial(t, url)).MonitorConnections(ctx, &networkservice.MonitorScopeSelector{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	return stream
}
