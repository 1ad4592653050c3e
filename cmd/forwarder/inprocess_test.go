package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// inProcess runs the daemon's run in the test's process (so that the race
// detector and goleak see it), with flags only: the environment is the
// test's.
type inProcess struct {
	stdout, stderr *lines
	cancel         context.CancelFunc
	done           chan struct{} // closed when run returned code
	code           int
	url, metrics   string
}

func runInProcess(t *testing.T, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &inProcess{stdout: newLines(), stderr: newLines(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		d.code = run(ctx, args, d.stdout, d.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		<-d.done
	})
	_, line := d.stdout.waitFor(t, 0, `^listening `)
	d.url = strings.TrimPrefix(line, "listening ")
	_, line = d.stdout.waitFor(t, 0, `^metrics `)
	d.metrics = strings.TrimPrefix(line, "metrics ")
	d.stdout.waitFor(t, 0, `^ready$`)
	return d
}

// stop stops the daemon as SIGTERM would and returns its exit code.
func (d *inProcess) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	<-d.done
	return d.code
}

// TestEndToEnd runs the forwarder in-process with three echo members as
// child processes and a client in the test: it serves the client's
// connection, its metrics follow the traffic, the views and a heal, and it
// stops cleanly.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	sock := filepath.Join(dir, "forwarder.sock")
	d := runInProcess(t, "--name=fwd", "--listen-url=unix://"+sock, "--metrics-addr=127.0.0.1:0", "--socket-mode=0660", "--pprof")
	waitServing(t, d.url)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %v, %v; want mode 0660", fi, err)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/debug/pprof/cmdline": ""} {
		if code, body := get(t, d.metrics, path); code != 200 || !strings.HasPrefix(body, want) {
			t.Fatalf("GET %s: %d %q", path, code, body)
		}
	}
	before := scrape(t, d.metrics)

	members := map[string]*member{}
	for _, id := range []string{"m1", "m2", "m3"} {
		members[id] = startMember(t, dir, d.url, "echo", id)
	}
	c := quietClient(t, d.url)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.Connect(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		payload := fmt.Sprintf("call %d", i)
		if reply, err := conn.Call(ctx, []byte(payload)); err != nil || string(reply) != payload {
			t.Fatalf("call %d: %q, %v", i, reply, err)
		}
	}

	after := scrape(t, d.metrics)
	requests := `tether_forwarder_requests_total{code="OK",method="Request",service="networkservice.NetworkService"}`
	if after[requests] < before[requests]+1 {
		t.Errorf("%s went from %v to %v", requests, before[requests], after[requests])
	}
	for series, want := range map[string]float64{
		`tether_forwarder_connections`:                               1,
		`tether_view_members{group="echo"}`:                          3,
		`tether_view_member_events_total{event="join",group="echo"}`: 3,
		`tether_forwarder_heals_total{cause="view"}`:                 0,
	} {
		if after[series] != want {
			t.Errorf("%s = %v, want %v", series, after[series], want)
		}
	}
	if before[`tether_forwarder_connections`] != 0 {
		t.Errorf("connections before any = %v", before[`tether_forwarder_connections`])
	}
	if after[`tether_view_installed_total{group="echo"}`] < 3 {
		t.Errorf("views installed = %v, want at least 3", after[`tether_view_installed_total{group="echo"}`])
	}

	// The connection's member dies: the connection moves to another
	// member, a heal. View refresh moves it when the view without the
	// member arrives; the client's heal re-requests it when its channel
	// breaks: whichever comes first moves it, and the other finds it moved.
	victim := members[conn.Member()]
	if victim == nil {
		t.Fatalf("the connection is on %q, not one of the members", conn.Member())
	}
	mark := len(d.stderr.snapshot())
	victim.kill(t)
	_, line := d.stderr.waitFor(t, mark, `connection healed`)
	if !strings.Contains(line, "from="+victim.id) || (!strings.Contains(line, "cause=view") && !strings.Contains(line, "cause=client")) {
		t.Fatalf("heal logged as %s", line)
	}
	healed := scrape(t, d.metrics)
	if n := healed[`tether_forwarder_heals_total{cause="view"}`] + healed[`tether_forwarder_heals_total{cause="client"}`]; n != 1 {
		t.Errorf("%v heals, want 1", n)
	}
	if n := healed[`tether_forwarder_heal_duration_seconds{cause="view"}`] + healed[`tether_forwarder_heal_duration_seconds{cause="client"}`]; n != 1 {
		t.Errorf("%v heal durations, want 1", n)
	}
	for series, want := range map[string]float64{
		`tether_forwarder_connections`:                                  1,
		`tether_view_members{group="echo"}`:                             2,
		`tether_view_member_events_total{event="failure",group="echo"}`: 1,
	} {
		if healed[series] != want {
			t.Errorf("after the heal, %s = %v, want %v", series, healed[series], want)
		}
	}
	// The connection works on its new member.
	if reply, err := conn.Call(ctx, []byte("after")); err != nil || string(reply) != "after" {
		t.Fatalf("call after the heal: %q, %v", reply, err)
	}

	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, d.stderr.text())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the socket is still there: %v", err)
	}
}
