package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

// BenchmarkStartToReady is the time from exec to a ready forwarder
// (listening, gRPC health SERVING: it prints "ready" then). The stop after
// each start is not timed.
func BenchmarkStartToReady(b *testing.B) {
	binary(b, forwarderPkg) // built before the clock runs
	dir := socketDir(b)
	b.ResetTimer()
	for i := range b.N {
		sock := filepath.Join(dir, fmt.Sprintf("f%d.sock", i))
		p := spawn(b, []string{"TETHER_NAME=fwd", "TETHER_LISTEN_URL=unix://" + sock, "TETHER_METRICS_ADDR=127.0.0.1:0", "TETHER_LOG_LEVEL=warn"})
		p.stdout.waitFor(b, 0, `^ready$`)
		b.StopTimer()
		p.signal(b, syscall.SIGTERM)
		if code := p.wait(b); code != 0 {
			b.Fatalf("exit status %d:\n%s", code, p.stderr.text())
		}
		b.StartTimer()
	}
}

// benchMember is a member endpoint that accepts every connection and keeps
// nothing: what the benchmark measures is the forwarder's cost.
type benchMember struct{}

func (benchMember) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (benchMember) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// BenchmarkResidentMemory measures the forwarder's resident memory (VmRSS,
// after a garbage collection) idle and with 10,000 open connections, opened
// with raw NetworkService requests through it to a member in the
// benchmark's process. It reports rss-idle-bytes, rss-10k-bytes,
// rss-bytes/conn (the target is under 10 KiB), heap-bytes/conn (Go heap in
// use), goroutines/conn, open-ns/conn (the time to open one, 64 at a time)
// and stop-ms (SIGTERM to exit, closing all 10,000 at the member). ns/op is
// a whole run.
func BenchmarkResidentMemory(b *testing.B) {
	const conns = 10_000
	binary(b, forwarderPkg)
	for b.Loop() {
		r := measureConnections(b, conns)
		b.ReportMetric(r.rssIdle, "rss-idle-bytes")
		b.ReportMetric(r.rssLoaded, "rss-10k-bytes")
		b.ReportMetric((r.rssLoaded-r.rssIdle)/conns, "rss-bytes/conn")
		b.ReportMetric((r.heapLoaded-r.heapIdle)/conns, "heap-bytes/conn")
		b.ReportMetric((r.goroutinesLoaded-r.goroutinesIdle)/conns, "goroutines/conn")
		b.ReportMetric(float64(r.open.Nanoseconds())/conns, "open-ns/conn")
		b.ReportMetric(float64(r.stop.Milliseconds()), "stop-ms")
	}
}

type memoryRun struct {
	rssIdle, rssLoaded               float64
	heapIdle, heapLoaded             float64
	goroutinesIdle, goroutinesLoaded float64
	open, stop                       time.Duration
}

func measureConnections(b *testing.B, conns int) memoryRun {
	b.Helper()
	dir := socketDir(b)
	p := startForwarder(b, dir, "TETHER_LOG_LEVEL=warn", "TETHER_PPROF=true")

	// The member: a gRPC endpoint here, joined through the forwarder.
	memberURL := "unix://" + filepath.Join(dir, "member.sock")
	lis, err := sockurl.Listen(context.Background(), memberURL, 0)
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, benchMember{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()
	views, err := membership.Dial(p.url)
	if err != nil {
		b.Fatal(err)
	}
	defer views.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ms, err := views.Join(ctx, "bench", view.Member{ID: "m0", Endpoints: map[string]string{view.EndpointGRPC: memberURL}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = ms.Leave(context.Background()) }()

	var r memoryRun
	r.rssIdle, r.heapIdle, r.goroutinesIdle = usage(b, p)

	ns := networkservice.NewNetworkServiceClient(dial(b, p.url))
	expires := timestamppb.New(time.Now().Add(time.Hour))
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(conns) {
					return
				}
				id := "bench-" + strconv.FormatInt(i, 10)
				_, err := ns.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
					Id: id, NetworkService: "bench",
					Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "bench-client", Id: id, Expires: expires}}},
				}})
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	r.open = time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	if got := scrape(b, p.metrics)["tether_forwarder_connections"]; got != float64(conns) {
		b.Fatalf("the forwarder holds %v connections, want %d", got, conns)
	}
	r.rssLoaded, r.heapLoaded, r.goroutinesLoaded = usage(b, p)
	if strings.Contains(p.stderr.text(), "subscription ended") {
		b.Errorf("the heal tracker fell behind the monitor:\n%s", p.stderr.text())
	}

	start = time.Now()
	p.signal(b, syscall.SIGTERM)
	if code := p.wait(b); code != 0 {
		b.Fatalf("exit status %d:\n%s", code, p.stderr.text())
	}
	r.stop = time.Since(start)
	return r
}

// usage collects the forwarder's garbage (pprof's heap profile with gc=1)
// and returns its VmRSS, its Go heap in use and its goroutines.
func usage(b *testing.B, p *proc) (rss, heap, goroutines float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metrics+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	m := scrape(b, p.metrics)
	return vmRSS(b, p.cmd.Process.Pid), m["go_memstats_heap_inuse_bytes"], m["go_goroutines"]
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(b *testing.B, pid int) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
