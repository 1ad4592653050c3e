package tcp

import (
	"io"
	"net"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// Targets (issue 5): 64-byte round trip ≤ 1.2× a bare net.Conn ping-pong on
// loopback; 1 MiB throughput ≥ 90% of a bare net.Conn; ratios to a gRPC
// bidirectional stream. Compare with benchstat, e.g.
//
//	go test -run '^$' -bench . -count 8 ./pkg/rdma/tcp > tcp.txt
//	benchstat -col /kind tcp.txt   (the names below pair up as kind=conn|channel|grpc)

// connPair returns both ends of a loopback TCP connection.
func connPair(b *testing.B) (client, server net.Conn) {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		b.Fatal("accept failed")
	}
	b.Cleanup(func() {
		_ = client.Close()
		_ = server.Close()
	})
	return client, server
}

func BenchmarkPingPong64(b *testing.B) {
	b.Run("kind=conn", func(b *testing.B) {
		client, server := connPair(b)
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 64)
			for {
				if _, err := io.ReadFull(server, buf); err != nil {
					return
				}
				if _, err := server.Write(buf); err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 64)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := client.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(client, buf); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		_ = client.Close()
		<-done
	})
	b.Run("kind=channel", func(b *testing.B) {
		client, server := rdmatest.Pair(b, New(), "127.0.0.1:0")
		rdmatest.ChannelPingPong(b, client, server, 64)
	})
	b.Run("kind=grpc", func(b *testing.B) { rdmatest.GRPCPingPong(b, 64) })
}

func BenchmarkThroughput1MiB(b *testing.B) {
	const size = 1 << 20
	b.Run("kind=conn", func(b *testing.B) {
		client, server := connPair(b)
		n := b.N
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, size)
			for range n {
				if _, err := io.ReadFull(server, buf); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		buf := make([]byte, size)
		b.SetBytes(size)
		b.ReportAllocs()
		b.ResetTimer()
		for range n {
			if _, err := client.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
	b.Run("kind=channel", func(b *testing.B) {
		client, server := rdmatest.Pair(b, New(), "127.0.0.1:0")
		rdmatest.ChannelThroughput(b, client, server, size)
	})
	b.Run("kind=grpc", func(b *testing.B) { rdmatest.GRPCThroughput(b, size) })
}

func BenchmarkAcked(b *testing.B) { rdmatest.Acked(b, New(), "127.0.0.1:0") }

// BenchmarkSetup opens and closes channels one after the other (dial,
// accept, close).
func BenchmarkSetup(b *testing.B) { rdmatest.Setup(b, New(), "127.0.0.1:0") }
