package grpcopts_test

import (
	"context"
	"encoding/binary"
	"net"
	"path/filepath"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tether-mesh/tether/internal/grpcopts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pingCounter counts the HTTP/2 PING frames written through a connection
// (after the client's 24-byte preface, frames are a 9-byte header and a
// payload; writes may hold several frames or part of one).
type pingCounter struct {
	net.Conn
	mu      sync.Mutex
	skip    int    // preface or payload bytes still to pass over
	hdr     []byte // the frame header read so far
	started bool
	pings   int
}

func (c *pingCounter) Write(b []byte) (int, error) {
	c.mu.Lock()
	if !c.started {
		c.started, c.skip = true, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	}
	for p := b; len(p) > 0; {
		if c.skip > 0 {
			n := min(c.skip, len(p))
			c.skip, p = c.skip-n, p[n:]
			continue
		}
		n := min(9-len(c.hdr), len(p))
		c.hdr, p = append(c.hdr, p[:n]...), p[n:]
		if len(c.hdr) == 9 {
			if c.hdr[3] == 0x6 { // PING
				c.pings++
			}
			c.skip = int(binary.BigEndian.Uint32(append([]byte{0}, c.hdr[:3]...)))
			c.hdr = c.hdr[:0]
		}
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *pingCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pings
}

// serveHealth serves gRPC's health service on a unix socket with the
// server options serve and returns a client dialed with dial; wrap, if
// set, wraps the client's connection.
func serveHealth(t *testing.T, serve []grpc.ServerOption, dial []grpc.DialOption, wrap func(net.Conn) net.Conn) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(serve...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", addr)
		if err == nil && wrap != nil {
			nc = wrap(nc)
		}
		return nc, err
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dialer)}, dial...)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// TestNoBandwidthPings: with the default, dynamic windows, a client that
// receives answers sends PINGs to estimate the bandwidth; with grpcopts'
// options on both sides, none.
func TestNoBandwidthPings(t *testing.T) {
	tests := []struct {
		name      string
		dial      []grpc.DialOption
		serve     []grpc.ServerOption
		wantPings bool
	}{
		{"dynamic windows", nil, nil, true},
		{"static windows", grpcopts.DialOptions(), grpcopts.ServerOptions(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			counter := &pingCounter{}
			client := serveHealth(t, tt.serve, tt.dial, func(nc net.Conn) net.Conn {
				counter.Conn = nc
				return counter
			})
			for range 20 {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			if got := counter.count() > 0; got != tt.wantPings {
				t.Fatalf("client sent %d PINGs; want some: %v", counter.count(), tt.wantPings)
			}
		})
	}
}

// goroutinesCreated is the number of goroutines this process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStreamWorkers: by default a server starts a goroutine for every
// call; with grpcopts' options, calls one after the other run on its
// workers. (Client and server share this process: the count covers both.)
func TestStreamWorkers(t *testing.T) {
	const calls = 200
	tests := []struct {
		name        string
		serve       []grpc.ServerOption
		wantPerCall bool // at least one new goroutine per call
	}{
		{"default", nil, true},
		{"workers", grpcopts.ServerOptions(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := serveHealth(t, tt.serve, grpcopts.DialOptions(), nil)
			check := func() {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			check() // the connection is up
			before := goroutinesCreated()
			for range calls {
				check()
			}
			created := goroutinesCreated() - before
			// A worker may not be back yet when the next call arrives (the
			// server then starts a goroutine): a quarter leaves room.
			if perCall := created >= calls; perCall != tt.wantPerCall || (!tt.wantPerCall && created > calls/4) {
				t.Fatalf("%d calls started %d goroutines; want one per call: %v", calls, created, tt.wantPerCall)
			}
		})
	}
}
