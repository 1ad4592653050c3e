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

// BenchmarkServeBookkeeping is what Serve adds to a message, alone: its
// channel hands it a call of 64 bytes at once on its own goroutine and
// drops the answer. kind=serve runs Serve with an echo handler; kind=loop
// is the floor, an echo loop over the same channel that only swaps the
// kind byte of the header.
func BenchmarkServeBookkeeping(b *testing.B) {
	echo := func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil }
	loop := func(ctx context.Context, ch rdma.Channel) {
		var in, out rdma.Message
		var hdr [9]byte
		for ch.Recv(ctx, &in) == nil {
			copy(hdr[:], in.Header)
			hdr[0] = byte(call.KindReply)
			out.Header, out.Payload = hdr[:], in.Payload
			if _, err := ch.Send(ctx, &out); err != nil {
				return
			}
		}
	}
	for _, k := range []struct {
		name  string
		serve func(context.Context, rdma.Channel)
	}{
		{"kind=serve", func(ctx context.Context, ch rdma.Channel) { _ = call.Serve(ctx, ch, echo, quiet) }},
		{"kind=loop", loop},
	} {
		b.Run(k.name, func(b *testing.B) {
			ch := &callsAtOnce{left: b.N, payload: make([]byte, 64)}
			ch.hdr[0], ch.hdr[8] = byte(call.KindCall), 1
			b.ReportAllocs()
			b.ResetTimer()
			k.serve(context.Background(), ch)
			b.StopTimer()
			if ch.answered != b.N {
				b.Fatalf("%d answers to %d calls", ch.answered, b.N)
			}
		})
	}
}

// callsAtOnce is a channel whose Recv returns a call at once, left times,
// then fails; Send counts the answers.
type callsAtOnce struct {
	rdma.Channel
	left     int
	hdr      [9]byte
	payload  []byte
	seq      uint64
	answered int
}

func (c *callsAtOnce) Recv(_ context.Context, m *rdma.Message) error {
	if c.left == 0 {
		return rdma.ErrClosed
	}
	c.left--
	copy(m.Prepare(c.seq+1, 0, c.hdr[:], len(c.payload)), c.payload)
	return nil
}

func (c *callsAtOnce) Send(_ context.Context, m *rdma.Message) (uint64, error) {
	if len(m.Header) > 0 && m.Header[0] == byte(call.KindReply) {
		c.answered++
	}
	c.seq++
	return c.seq, nil
}

func (c *callsAtOnce) Acked() uint64  { return c.seq }
func (c *callsAtOnce) ConnID() string { return "c1" }
