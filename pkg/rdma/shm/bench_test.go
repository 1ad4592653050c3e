package shm

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// Targets (issue 5): a 64-byte round trip ≤ 2× the bare shared-memory ring
// ping-pong below (the machine's floor); 1 MiB throughput ≥ 50% of a
// single-thread memcpy of 1 MiB; ratios to a gRPC bidirectional stream.
// Both ping-pongs poll with the same adaptive bound (wait.go). Each pair is measured in the same run;
// compare with benchstat:
//
//	go test -run '^$' -bench . -count 8 ./pkg/rdma/shm > shm.txt
//	benchstat -col /kind shm.txt

// bareRing is the floor: a single-producer single-consumer ring of 64-byte
// slots in a shared memfd mapping, tail and head on cache lines of their
// own, with the same hybrid wait as the channel (poll, then sleep on an
// eventfd kicked only when the flag says so), and nothing else.
type bareRing struct {
	tail, head *uint64
	sleep      *uint32
	slots      []byte
	n          uint64
	wait       *waiter
	_          [64]byte // keep each side's private state off the other side's cache lines
	private    uint64   // the producer's tail or the consumer's head
	spinner    spinner
	_          [64]byte
}

func newBareRing(b *testing.B, mem []byte) *bareRing {
	w, err := newWaiter()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.close)
	return &bareRing{
		tail:  (*uint64)(unsafe.Pointer(&mem[0])),
		head:  (*uint64)(unsafe.Pointer(&mem[128])),
		sleep: (*uint32)(unsafe.Pointer(&mem[256])),
		slots: mem[pageSize:],
		n:     uint64(len(mem)-pageSize) / 64,
		wait:  w,
	}
}

func (r *bareRing) send(msg []byte) {
	t := r.private
	copy(r.slots[(t%r.n)*64:][:64], msg)
	r.private = t + 1
	atomic.StoreUint64(r.tail, t+1)
	if atomic.LoadUint32(r.sleep) != 0 {
		r.wait.kick()
	}
}

func (r *bareRing) recv(msg []byte, d time.Duration) {
	h := r.private
	for !r.spinner.wait(d, func() bool { return atomic.LoadUint64(r.tail) != h }) {
		atomic.StoreUint32(r.sleep, 1)
		if atomic.LoadUint64(r.tail) == h {
			_ = r.wait.sleep(context.Background())
		}
		atomic.StoreUint32(r.sleep, 0)
	}
	copy(msg, r.slots[(h%r.n)*64:][:64])
	r.private = h + 1
	atomic.StoreUint64(r.head, h+1)
}

func BenchmarkPingPong64(b *testing.B) {
	spin := newOptions(nil).spin
	b.Run("kind=bare", func(b *testing.B) {
		fd, mem, err := createMemfd("bench", 2*(pageSize+64*64), true)
		if err != nil {
			b.Fatal(err)
		}
		_ = unix.Close(fd)
		defer func() { _ = unix.Munmap(mem) }()
		ping := newBareRing(b, mem[:pageSize+64*64])
		pong := newBareRing(b, mem[pageSize+64*64:])
		echo, peer := *ping, *pong // the other side's private positions
		done := make(chan struct{})
		n := b.N
		const warmup = 100 // both goroutines run before the clock starts
		go func() {
			defer close(done)
			buf := make([]byte, 64)
			for range warmup + n {
				echo.recv(buf, spin)
				peer.send(buf)
			}
		}()
		buf := make([]byte, 64)
		for range warmup {
			ping.send(buf)
			pong.recv(buf, spin)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range n {
			ping.send(buf)
			pong.recv(buf, spin)
		}
		b.StopTimer()
		<-done
	})
	b.Run("kind=channel", func(b *testing.B) {
		client, server := rdmatest.Pair(b, New(), "")
		rdmatest.ChannelPingPong(b, client, server, 64)
	})
	b.Run("kind=grpc", func(b *testing.B) { rdmatest.GRPCPingPong(b, 64) })
}

func BenchmarkThroughput1MiB(b *testing.B) {
	const size = 1 << 20
	b.Run("kind=memcpy", func(b *testing.B) {
		src, dst := make([]byte, size), make([]byte, size)
		b.SetBytes(size)
		b.ReportAllocs()
		for range b.N {
			copy(dst, src)
		}
	})
	b.Run("kind=channel", func(b *testing.B) {
		client, server := rdmatest.Pair(b, New(), "")
		rdmatest.ChannelThroughput(b, client, server, size)
	})
	b.Run("kind=grpc", func(b *testing.B) { rdmatest.GRPCThroughput(b, size) })
}

func BenchmarkAcked(b *testing.B) { rdmatest.Acked(b, New(), "") }

// BenchmarkSetup opens and closes channels one after the other (dial,
// accept, close).
func BenchmarkSetup(b *testing.B) { rdmatest.Setup(b, New(), "") }
