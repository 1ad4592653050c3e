package call_test

import (
	"context"
	"testing"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// BenchmarkCall compares, over inproc channels, a call of 64 bytes to an
// echo handler with a bare round trip of the same payload to an echo loop,
// measured by the channels' own benchmark (rdmatest.ChannelPingPong): the
// difference is what Caller and Serve cost (compare with benchstat -col
// /kind). kind=call appends the answers to one buffer (AppendCall);
// kind=call-new gets each answer in a new slice (Call).
func BenchmarkCall(b *testing.B) {
	payload := make([]byte, 64)
	b.Run("kind=bare", func(b *testing.B) {
		client, server := inprocPair(b, 0)
		rdmatest.ChannelPingPong(b, client, server, len(payload))
	})
	echo := func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil }
	b.Run("kind=call", func(b *testing.B) {
		ctx := context.Background()
		ch := serveInproc(b, func(ctx context.Context, srv rdma.Channel) { _ = call.Serve(ctx, srv, echo, quiet) })
		c := call.NewCaller(quiet)
		defer c.Close()
		c.Bind(ch, nil, nil)
		reply := make([]byte, 0, len(payload))
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if reply, err = c.AppendCall(ctx, reply[:0], nil, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kind=call-new", func(b *testing.B) {
		ctx := context.Background()
		ch := serveInproc(b, func(ctx context.Context, srv rdma.Channel) { _ = call.Serve(ctx, srv, echo, quiet) })
		c := call.NewCaller(quiet)
		defer c.Close()
		c.Bind(ch, nil, nil)
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
