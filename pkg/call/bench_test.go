package call_test

import (
	"context"
	"testing"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/rdma"
)

// BenchmarkCall compares, over inproc channels, a call of 64 bytes to an
// echo handler with a bare round trip of the same payload to an echo loop:
// the difference is what Caller and Serve cost (compare with benchstat
// -col /kind).
func BenchmarkCall(b *testing.B) {
	payload := make([]byte, 64)
	b.Run("kind=bare", func(b *testing.B) {
		ctx := context.Background()
		ch := serveInproc(b, func(ctx context.Context, srv rdma.Channel) {
			var m rdma.Message
			for srv.Recv(ctx, &m) == nil {
				if _, err := srv.Send(ctx, &rdma.Message{Payload: m.Payload}); err != nil {
					return
				}
			}
		})
		var out, in rdma.Message
		out.Payload = payload
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ch.Send(ctx, &out); err != nil {
				b.Fatal(err)
			}
			if err := ch.Recv(ctx, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kind=call", func(b *testing.B) {
		ctx := context.Background()
		echo := func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil }
		ch := serveInproc(b, func(ctx context.Context, srv rdma.Channel) { _ = call.Serve(ctx, srv, echo, quiet) })
		c := call.NewCaller(quiet)
		defer c.Close()
		c.Bind(ch, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, nil, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// serveInproc opens an inproc channel whose other end serve runs on until
// the benchmark ends.
func serveInproc(b *testing.B, serve func(context.Context, rdma.Channel)) rdma.Channel {
	b.Helper()
	ch, srv := inprocPair(b, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(ctx, srv)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return ch
}
