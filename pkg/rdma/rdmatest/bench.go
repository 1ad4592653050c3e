package rdmatest

import (
	"context"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// ChannelPingPong measures the round trip of size-byte messages: client
// sends, server echoes, client receives.
func ChannelPingPong(b *testing.B, client, server rdma.Channel, size int) {
	ctx := context.Background()
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
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := client.Send(ctx, &out); err != nil {
			b.Fatal(err)
		}
		if err := client.Recv(ctx, &in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = client.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
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
