package rdmatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// ChannelPingPong measures the round trip of size-byte messages: client
// sends, server echoes, client receives.
func ChannelPingPong(b *testing.B, client, server rdma.Channel, size int) {
	pingPong(b, client, server, size, false)
}

// Acked runs the Acked benchmarks on fresh channel pairs of p (listening
// on addr): with nothing in flight, with one message in flight, from every
// core at once, and in a ping-pong that calls Acked after every answer, as
// a caller does that reuses its request buffer once the request is
// acknowledged (reporting the share of round trips whose request Acked
// already covered when the answer arrived, acked/op).
func Acked(b *testing.B, p rdma.Provider, addr string) {
	b.Run("state=idle", func(b *testing.B) {
		client, server := Pair(b, p, addr)
		channelAcked(b, client, server, 0)
	})
	b.Run("state=inflight", func(b *testing.B) {
		client, server := Pair(b, p, addr)
		channelAcked(b, client, server, 1)
	})
	b.Run("state=parallel", func(b *testing.B) {
		client, server := Pair(b, p, addr)
		channelAckedParallel(b, client, server)
	})
	b.Run("state=pingpong", func(b *testing.B) {
		client, server := Pair(b, p, addr)
		pingPong(b, client, server, 64, true)
	})
}

// echo answers every message of server with its payload until server
// ends; the channel it returns then gives the error that stopped it (nil
// when the channel ended).
func echo(ctx context.Context, server rdma.Channel) <-chan error {
	done := make(chan error, 1)
	go func() {
		// The echo refers to the received payload; in a ping-pong it is
		// acknowledged before the next Recv reuses the buffer.
		var m, out rdma.Message
		for {
			if err := server.Recv(ctx, &m); err != nil {
				done <- nil
				return
			}
			out.Payload = m.Payload
			if _, err := server.Send(ctx, &out); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// interleaveBlock is how many round trips of one kind Interleaved times
// before it switches to the other kind; interleaveWarm is how many it makes
// untimed before each block.
const (
	interleaveBlock = 4096
	interleaveWarm  = 64
)

// Interleaved measures calls against the bare round trip of client and
// server (as ChannelPingPong makes it) in alternating blocks of a few
// thousand round trips, so that both meet the same machine: on a shared,
// noisy one, two benchmarks run one after the other can see different
// neighbours, and a neighbour that takes a core for a moment stalls a
// polling round trip for far longer than the round trip itself. calls(k)
// makes k calls, one after the other. It reports the medians over the
// blocks, which such stalls do not move: bare-ns/op and call-ns/op, and
// call/bare, the median ratio of a call block to the bare block just
// before it. ns/op is one round trip of each kind, stalls and the untimed
// round trips below included.
//
// The first round trips after a switch are not timed: they measure the
// switch, not either kind. (Each clock covers its own block alone: the
// untimed calls that follow a bare block once counted in its time, which
// made the bare round trip look slower and the ratio 2–11% lower.) The two kinds have servers of their own, and
// with polling channels (shm) the server of the kind that just ran still
// polls for a while, holding a core: on two cores the other server then
// waits for it, and the first round trip of a block takes as long as that
// poll (up to tens of microseconds, a few percent of a block, and varying
// from block to block), the next few somewhat longer than the rest.
func Interleaved(b *testing.B, client, server rdma.Channel, size int, calls func(k int) error) {
	ctx := context.Background()
	done := echo(ctx, server)
	out := rdma.Message{Payload: make([]byte, size)}
	var in rdma.Message
	bare := func(k int) error {
		for range k {
			if _, err := client.Send(ctx, &out); err != nil {
				return err
			}
			if err := client.Recv(ctx, &in); err != nil {
				return err
			}
		}
		return nil
	}
	// Warm up: both kinds run, buffers are grown, before the clock starts.
	if err := errors.Join(bare(100), calls(100)); err != nil {
		b.Fatal(err)
	}
	var bareNs, callNs, ratios []float64
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += interleaveBlock {
		k := min(interleaveBlock, b.N-n)
		if err := bare(interleaveWarm); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := bare(k); err != nil {
			b.Fatal(err)
		}
		tb := time.Since(t0)
		if err := calls(interleaveWarm); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := calls(k); err != nil {
			b.Fatal(err)
		}
		tc := time.Since(t1)
		bareNs = append(bareNs, float64(tb.Nanoseconds())/float64(k))
		callNs = append(callNs, float64(tc.Nanoseconds())/float64(k))
		ratios = append(ratios, float64(tc)/float64(tb))
	}
	b.StopTimer()
	b.ReportMetric(median(bareNs), "bare-ns/op")
	b.ReportMetric(median(callNs), "call-ns/op")
	b.ReportMetric(median(ratios), "call/bare")
	_ = client.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// median returns the middle value of v (the mean of the two middle ones
// for an even count); it sorts v.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func pingPong(b *testing.B, client, server rdma.Channel, size int, acked bool) {
	ctx := context.Background()
	done := echo(ctx, server)
	out := rdma.Message{Payload: make([]byte, size)}
	var in rdma.Message
	// Warm up: both goroutines run, buffers are grown, before the clock starts.
	for range 100 {
		if _, err := client.Send(ctx, &out); err != nil {
			b.Fatal(err)
		}
		if err := client.Recv(ctx, &in); err != nil {
			b.Fatal(err)
		}
	}
	covered := 0
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		seq, err := client.Send(ctx, &out)
		if err != nil {
			b.Fatal(err)
		}
		if err := client.Recv(ctx, &in); err != nil {
			b.Fatal(err)
		}
		if acked && client.Acked() >= seq {
			covered++
		}
	}
	b.StopTimer()
	if acked {
		b.ReportMetric(float64(covered)/float64(b.N), "acked/op")
	}
	_ = client.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// channelAcked measures Acked on client after one message that server
// received and inFlight more that it leaves unreceived (so that Acked has
// nothing new to find, but cannot know it without looking).
func channelAcked(b *testing.B, client, server rdma.Channel, inFlight int) {
	want := ackedSetup(b, client, server, inFlight)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if got := client.Acked(); got != want {
			b.Fatalf("acked %d, want %d", got, want)
		}
	}
}

// channelAckedParallel is channelAcked(b, client, server, 0) from
// GOMAXPROCS goroutines at once, as when many callers share a channel.
func channelAckedParallel(b *testing.B, client, server rdma.Channel) {
	want := ackedSetup(b, client, server, 0)
	var wrong atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if got := client.Acked(); got != want {
				wrong.Store(got)
			}
		}
	})
	b.StopTimer()
	if got := wrong.Load(); got != 0 {
		b.Fatalf("acked %d, want %d", got, want)
	}
}

// ackedSetup sends a message that server receives, waits until client sees
// it acknowledged, then sends inFlight more; it returns the first's
// sequence number.
func ackedSetup(b *testing.B, client, server rdma.Channel, inFlight int) uint64 {
	b.Helper()
	ctx := context.Background()
	out := rdma.Message{Payload: make([]byte, 64)}
	var in rdma.Message
	seq, err := client.Send(ctx, &out)
	if err != nil {
		b.Fatal(err)
	}
	if err := server.Recv(ctx, &in); err != nil {
		b.Fatal(err)
	}
	if err := client.WaitAcked(ctx, seq); err != nil {
		b.Fatal(err)
	}
	for range inFlight {
		if _, err := client.Send(ctx, &rdma.Message{Payload: make([]byte, 64)}); err != nil {
			b.Fatal(err)
		}
	}
	return seq
}

// ChannelThroughput measures one-way throughput of size-byte messages from
// sender to receiver; the receiver takes every message into its own buffer.
func ChannelThroughput(b *testing.B, sender, receiver rdma.Channel, size int) {
	ctx := context.Background()
	done := make(chan error, 1)
	const warmup = 8 // buffers grown, goroutines running, before the clock starts
	n := b.N
	go func() {
		var m rdma.Message
		for range warmup + n {
			if err := receiver.Recv(ctx, &m); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	out := rdma.Message{Payload: make([]byte, size)}
	for range warmup {
		if _, err := sender.Send(ctx, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range n {
		if _, err := sender.Send(ctx, &out); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// Pair dials a channel for connID to a fresh listener of p and returns both
// ends, closed at the end of the benchmark.
func Pair(b *testing.B, p rdma.Provider, addr string) (client, server rdma.Channel) {
	b.Helper()
	ctx := context.Background()
	l, err := p.Listen(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	secret := rdma.NewSecret()
	ep, err := l.Expect("bench", secret)
	if err != nil {
		b.Fatal(err)
	}
	dialed := make(chan error, 1)
	go func() {
		var err error
		client, err = p.Dial(ctx, l.Addr(), "bench", secret)
		dialed <- err
	}()
	server, err = ep.Accept(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := <-dialed; err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = client.Close()
		_ = server.Close()
		_ = l.Close()
	})
	return client, server
}

// Setup measures what a channel costs to open and close: a connection ID
// is expected on a listener of p, dialed and accepted; the accepted end
// receives (as a member's Serve would) until the dialer closes its end,
// and then closes too. One connection follows the other. Both sides run in
// this process: the time is mostly the CPU of both sides' setup and
// teardown, without the wake-ups of two processes.
func Setup(b *testing.B, p rdma.Provider, addr string) {
	ctx := context.Background()
	l, err := p.Listen(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close() //nolint:errcheck // nothing to tell
	secret := rdma.NewSecret()
	one := func(i int) error {
		connID := fmt.Sprintf("setup-%d", i)
		ep, err := l.Expect(connID, secret)
		if err != nil {
			return err
		}
		defer ep.Close() //nolint:errcheck // the channels' errors are the ones to tell
		client, err := p.Dial(ctx, l.Addr(), connID, secret)
		if err != nil {
			return err
		}
		server, err := ep.Accept(ctx)
		if err != nil {
			return errors.Join(err, client.Close())
		}
		served := make(chan error, 1)
		go func() {
			var m rdma.Message
			for server.Recv(ctx, &m) == nil {
			}
			served <- server.Close()
		}()
		return errors.Join(client.Close(), <-served)
	}
	for i := range 20 { // warm up: the listener's goroutines, buffers and pools
		if err := one(-i - 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := one(i); err != nil {
			b.Fatal(err)
		}
	}
}
