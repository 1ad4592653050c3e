package grpcwin_test

import (
	"context"
	"encoding/binary"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tether-mesh/tether/internal/grpcwin"
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

// TestNoBandwidthPings: with the default, dynamic windows, a client that
// receives answers sends PINGs to estimate the bandwidth; with grpcwin's
// options on both sides, none.
func TestNoBandwidthPings(t *testing.T) {
	tests := []struct {
		name      string
		dial      []grpc.DialOption
		serve     []grpc.ServerOption
		wantPings bool
	}{
		{"dynamic windows", nil, nil, true},
		{"static windows", grpcwin.DialOptions(), grpcwin.ServerOptions(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer(tt.serve...)
			healthpb.RegisterHealthServer(srv, health.NewServer())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(lis) }()
			defer func() {
				srv.Stop()
				if err := <-served; err != nil {
					t.Error(err)
				}
			}()
			counter := &pingCounter{}
			dial := func(ctx context.Context, addr string) (net.Conn, error) {
				var d net.Dialer
				nc, err := d.DialContext(ctx, "unix", addr)
				counter.Conn = nc
				return counter, err
			}
			opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial)}, tt.dial...)
			cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			client := healthpb.NewHealthClient(cc)
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
