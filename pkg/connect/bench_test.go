package connect_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/checkrequest"
	"github.com/tether-mesh/tether/pkg/clienturl"
	"github.com/tether-mesh/tether/pkg/connect"
	"github.com/tether-mesh/tether/pkg/refcount"
)

// childEndpointEnv makes the test binary serve an endpoint on the socket it
// names and exit when its standard input closes: the benchmarks measure the
// passthrough in this process and nothing of the endpoint.
const childEndpointEnv = "CONNECT_BENCH_ENDPOINT"

func init() {
	path := os.Getenv(childEndpointEnv)
	if path == "" {
		return
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, chain.NewServer(checkrequest.NewServer(), refcount.NewServer(), chain.Tail(&ledger{open: map[string]bool{}})))
	go func() { _ = srv.Serve(lis) }()
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent goes away
	srv.Stop()
	os.Exit(0)
}

// childEndpoint starts an endpoint in a child process and returns its URL.
func childEndpoint(b *testing.B) *url.URL {
	b.Helper()
	path := filepath.Join(b.TempDir(), "ep.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEndpointEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("child endpoint: %q %v", line, err)
	}
	return &url.URL{Scheme: "unix", Path: path}
}

// BenchmarkRequestClose compares a connection's Request and Close sent
// through the connect element with the same calls sent straight with a gRPC
// stub, alternately in one loop; ratio is connect over direct.
func BenchmarkRequestClose(b *testing.B) {
	u := childEndpoint(b)
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	stub := networkservice.NewNetworkServiceClient(cc)
	c := connect.NewServer()
	fwd := chain.NewServer(clienturl.NewServer(u), c)
	ctx := context.Background()

	direct := func(id string) {
		conn, err := stub.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stub.Close(ctx, conn); err != nil {
			b.Fatal(err)
		}
	}
	viaConnect := func(id string) {
		conn, err := fwd.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fwd.Close(ctx, conn); err != nil {
			b.Fatal(err)
		}
	}
	// Keep one connection open through connect, so that the shared client
	// connection stays up, as it does in a forwarder with traffic.
	keep, err := fwd.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "keep"}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _, _ = fwd.Close(ctx, keep) }()
	for i := range 100 { // warm both paths
		direct(strconv.Itoa(i))
		viaConnect(strconv.Itoa(i))
	}

	var tDirect, tConnect time.Duration
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		id := strconv.Itoa(i)
		s := time.Now()
		direct("d" + id)
		m := time.Now()
		viaConnect("c" + id)
		tConnect += time.Since(m)
		tDirect += m.Sub(s)
	}
	b.ReportMetric(float64(tDirect.Nanoseconds())/float64(b.N), "direct-ns/op")
	b.ReportMetric(float64(tConnect.Nanoseconds())/float64(b.N), "connect-ns/op")
	b.ReportMetric(float64(tConnect)/float64(tDirect), "ratio")
}

// BenchmarkOpenConnections opens 10,000 connections through connect to an
// endpoint in another process and reports what the passthrough holds for
// each: goroutines and heap bytes.
func BenchmarkOpenConnections(b *testing.B) {
	const n = 10000
	u := childEndpoint(b)
	c := connect.NewServer()
	fwd := chain.NewServer(clienturl.NewServer(u), refcount.NewServer(), c)
	ctx := context.Background()
	conns := make([]*networkservice.Connection, n)
	var goroutines, heap float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		for i := range conns {
			conn, err := fwd.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: fmt.Sprint("conn-", i)}})
			if err != nil {
				b.Fatal(err)
			}
			conns[i] = conn
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		goroutines = float64(runtime.NumGoroutine()-g0) / n
		heap = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / n
		for _, conn := range conns {
			if _, err := fwd.Close(ctx, conn); err != nil {
				b.Fatal(err)
			}
		}
		if c.(connect.ClientCounter).ClientConns() != 0 {
			b.Fatal("client connections left open")
		}
	}
	b.ReportMetric(goroutines, "goroutines/conn")
	b.ReportMetric(heap, "heap-B/conn")
}
