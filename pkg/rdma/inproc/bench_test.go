package inproc

import (
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// Targets (issue 5): zero allocations per message in steady state (allocs/op
// below), and the ratios to a gRPC bidirectional stream carrying the same
// messages, measured in the same run:
//
//	go test -run '^$' -bench . -count 8 ./pkg/rdma/inproc > inproc.txt
//	benchstat -col /kind inproc.txt

func BenchmarkPingPong64(b *testing.B) {
	b.Run("kind=channel", func(b *testing.B) {
		client, server := rdmatest.Pair(b, New(), "")
		rdmatest.ChannelPingPong(b, client, server, 64)
	})
	b.Run("kind=grpc", func(b *testing.B) { rdmatest.GRPCPingPong(b, 64) })
}

func BenchmarkThroughput1MiB(b *testing.B) {
	b.Run("kind=channel", func(b *testing.B) {
		client, server := rdmatest.Pair(b, New(), "")
		rdmatest.ChannelThroughput(b, client, server, 1<<20)
	})
	b.Run("kind=grpc", func(b *testing.B) { rdmatest.GRPCThroughput(b, 1<<20) })
}

func BenchmarkAcked(b *testing.B) { rdmatest.Acked(b, New(), "") }

// BenchmarkSetup opens and closes channels one after the other (dial,
// accept, close).
func BenchmarkSetup(b *testing.B) { rdmatest.Setup(b, New(), "") }
