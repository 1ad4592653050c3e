package call

import (
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// ackingChannel acknowledges every message sent so far and counts how
// often it is asked.
type ackingChannel struct {
	rdma.Channel
	sent, looks uint64
}

func (a *ackingChannel) Acked() uint64 {
	a.looks++
	return a.sent
}

// loneRun makes lone calls through l, as AppendCall does, of the given
// sizes in turn, and returns how many of them got a buffer not seen
// before.
func loneRun(t *testing.T, l *loneBufs, b *bound, sizes []int) (fresh int) {
	t.Helper()
	ch := b.ch.(*ackingChannel)
	seen := map[*byte]bool{}
	for i, n := range sizes {
		buf := l.take(b, n)
		if len(buf) != n {
			t.Fatalf("call %d: a buffer of %d bytes, want %d", i, len(buf), n)
		}
		if !seen[&buf[:1][0]] {
			seen[&buf[:1][0]] = true
			fresh++
		}
		ch.sent++
		l.keep(b, buf, ch.sent)
		held := 0
		for _, k := range l.buf {
			held += cap(k)
		}
		if held > 448<<10 {
			t.Fatalf("call %d: %d bytes kept", i, held)
		}
	}
	return fresh
}

// repeat returns n copies of size.
func repeat(size, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// TestLoneBufs runs lone calls of one size: the first round takes new
// buffers and later ones reuse them, for sizes up to maxSpareBuf; a round
// is sixteen calls for small buffers and four for large ones, and the
// channel is asked once a round.
func TestLoneBufs(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		wantFresh int // buffers taken new, in 160 calls
	}{
		{"small", 64, 16},
		{"largest small", smallLoneBuf, 16},
		{"large", smallLoneBuf + 1, largeLonePlaces},
		{"largest kept", maxSpareBuf, largeLonePlaces},
		{"too large to keep", maxSpareBuf + 1, 160},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const calls = 160
			ch := &ackingChannel{}
			var l loneBufs
			if fresh := loneRun(t, &l, &bound{ch: ch}, repeat(tt.size, calls)); fresh != tt.wantFresh {
				t.Errorf("%d buffers taken new, want %d", fresh, tt.wantFresh)
			}
			if tt.wantFresh < calls {
				if want := uint64(calls / tt.wantFresh); ch.looks > want {
					t.Errorf("Acked asked %d times in %d calls, want at most %d", ch.looks, calls, want)
				}
			}
		})
	}
}

// TestLoneBufsPhases: after calls of another size, a run of calls takes
// new buffers for one round only, and what is kept stays bounded.
func TestLoneBufsPhases(t *testing.T) {
	small, large := 100, maxSpareBuf
	tests := []struct {
		name      string
		before    []int
		size      int
		wantFresh int
	}{
		{"large after small", repeat(small, 21), large, largeLonePlaces},
		{"small after large", repeat(large, 7), small, 16},
		{"small after mixed", append(repeat(small, 9), repeat(large, 3)...), small, 16},
		{"large after mixed", append(repeat(large, 3), repeat(small, 9)...), large, largeLonePlaces},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &bound{ch: &ackingChannel{}}
			var l loneBufs
			loneRun(t, &l, b, tt.before)
			if fresh := loneRun(t, &l, b, repeat(tt.size, 100)); fresh != tt.wantFresh {
				t.Errorf("%d buffers taken new, want %d", fresh, tt.wantFresh)
			}
		})
	}
}
