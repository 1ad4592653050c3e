package call_test

import (
	"context"
	"sync"
	"sync/atomic"
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
// kind=call-new gets each answer in a new slice (Call); kind=interleaved
// alternates blocks of the two and reports call/bare (rdmatest.Interleaved).
func BenchmarkCall(b *testing.B) {
	payload := make([]byte, 64)
	b.Run("kind=bare", func(b *testing.B) {
		client, server := inprocPair(b, 0)
		rdmatest.ChannelPingPong(b, client, server, len(payload))
	})
	b.Run("kind=call", func(b *testing.B) {
		appendCalls(b, echoCaller(b), payload)
	})
	b.Run("kind=interleaved", func(b *testing.B) {
		client, server := inprocPair(b, 0)
		c, ctx := echoCaller(b), context.Background()
		reply := make([]byte, 0, len(payload))
		rdmatest.Interleaved(b, client, server, len(payload), func(k int) error {
			for range k {
				var err error
				if reply, err = c.AppendCall(ctx, reply[:0], nil, payload); err != nil {
					return err
				}
			}
			return nil
		})
	})
	b.Run("kind=call-new", func(b *testing.B) {
		c, ctx := echoCaller(b), context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, nil, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// echoCaller returns a caller bound to an inproc channel whose other end
// Serve answers with an echo, until the benchmark ends.
func echoCaller(b *testing.B) *call.Caller {
	b.Helper()
	echo := func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil }
	ch := serveInproc(b, func(ctx context.Context, srv rdma.Channel) { _ = call.Serve(ctx, srv, echo, quiet) })
	return boundCaller(b, ch)
}

// boundCaller returns a caller bound to ch, closed when the benchmark ends.
func boundCaller(b *testing.B, ch rdma.Channel) *call.Caller {
	c := call.NewCaller(quiet)
	b.Cleanup(c.Close)
	c.Bind(ch, nil, nil)
	return c
}

// appendCalls makes the benchmark's calls of payload with AppendCall into
// one reply buffer.
func appendCalls(b *testing.B, c *call.Caller, payload []byte) {
	b.Helper()
	ctx := context.Background()
	reply := make([]byte, 0, len(payload))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if reply, err = c.AppendCall(ctx, reply[:0], nil, payload); err != nil {
			b.Fatal(err)
		}
	}
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

// BenchmarkCallerBookkeeping is what a Caller adds to a call, alone: its
// channel answers every call at once on the caller's goroutine, so no
// scheduling or channel cost is left. kind=cheap-acked has an Acked that
// is one atomic load (inproc, tcp); kind=locked-acked one that takes a
// lock, as shm's does when its peer has consumed since the last look (and
// there it also reads a cache line the peer has just written).
func BenchmarkCallerBookkeeping(b *testing.B) {
	for _, locked := range []bool{false, true} {
		name := "kind=cheap-acked"
		if locked {
			name = "kind=locked-acked"
		}
		b.Run(name, func(b *testing.B) {
			appendCalls(b, boundCaller(b, &echoAtOnce{lockedAcked: locked}), make([]byte, 64))
		})
	}
}

// echoAtOnce is a channel whose Recv returns the answer to the last call
// sent, on the caller's goroutine.
type echoAtOnce struct {
	rdma.Channel
	lockedAcked bool

	hdr     [9]byte
	payload []byte
	seq     uint64
	mu      sync.Mutex
	acked   atomic.Uint64
}

func (e *echoAtOnce) Send(_ context.Context, m *rdma.Message) (uint64, error) {
	copy(e.hdr[:], m.Header)
	e.hdr[0] = byte(call.KindReply)
	e.payload = m.Payload
	e.seq++
	return e.seq, nil
}

func (e *echoAtOnce) Recv(_ context.Context, m *rdma.Message) error {
	m.Header, m.Payload = e.hdr[:], e.payload
	e.acked.Store(e.seq)
	return nil
}

func (e *echoAtOnce) Acked() uint64 {
	if e.lockedAcked {
		e.mu.Lock()
		defer e.mu.Unlock()
	}
	return e.acked.Load()
}

func (e *echoAtOnce) ConnID() string { return "c1" }
