package tcp

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// TestRecvContexts: a Recv follows the end of its own context whether the
// channel registered that context for an earlier Recv or not, and a Recv
// that keeps its context allocates nothing for it.
func TestRecvContexts(t *testing.T) {
	rdmatest.CheckLeaks(t)
	l, err := New(WithLogger(rdmatest.NewLogRecorder().Logger())).Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, ch := rawPeer(t, l, "contexts")
	seq := uint64(0)
	send := func() {
		t.Helper()
		seq++
		body := fmt.Appendf(nil, "m%d", seq)
		if _, err := nc.Write(frameBytes(frame{typ: frameData, length: uint32(len(body)), seq: seq}, body)); err != nil {
			t.Fatal(err)
		}
	}
	var m rdma.Message
	recv := func(ctx context.Context) error {
		t.Helper()
		if err := ch.Recv(ctx, &m); err != nil {
			return err
		}
		if want := fmt.Sprintf("m%d", m.Seq); string(m.Payload) != want {
			t.Errorf("message %d: %q, want %q", m.Seq, m.Payload, want)
		}
		return nil
	}
	recvWaiting := func(ctx context.Context, cancel context.CancelFunc) error {
		errc := make(chan error, 1)
		go func() { errc <- ch.Recv(ctx, &m) }()
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Recv did not return after its context ended")
			return nil
		}
	}

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"one context for many receives, then it ends while Recv waits", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			for range 3 {
				send()
				if err := recv(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := recvWaiting(ctx, cancel); !errors.Is(err, context.Canceled) {
				t.Fatalf("Recv: %v, want context.Canceled", err)
			}
		}},
		{"a context that ended already", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := ch.Recv(ctx, &m); !errors.Is(err, context.Canceled) {
				t.Fatalf("Recv: %v, want context.Canceled", err)
			}
		}},
		{"a context derived from the one registered ends with it", func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			send()
			if err := recv(parent); err != nil {
				t.Fatal(err)
			}
			type key struct{}
			if err := recvWaiting(context.WithValue(parent, key{}, 1), cancel); !errors.Is(err, context.Canceled) {
				t.Fatalf("Recv: %v, want context.Canceled", err)
			}
		}},
		{"a new context after one ended, and no allocation per receive", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			send()
			if err := recv(ctx); err != nil {
				t.Fatal(err)
			}
			// AllocsPerRun runs the function once more than asked.
			frames := make([][]byte, 101)
			for i := range frames {
				seq++
				frames[i] = frameBytes(frame{typ: frameData, length: 1, seq: seq}, []byte{'x'})
			}
			i := 0
			allocs := testing.AllocsPerRun(len(frames)-1, func() {
				if _, err := nc.Write(frames[i]); err != nil {
					t.Fatal(err)
				}
				i++
				if err := ch.Recv(ctx, &m); err != nil || string(m.Payload) != "x" {
					t.Fatalf("Recv: %q, %v", m.Payload, err)
				}
			})
			if allocs != 0 {
				t.Errorf("a Recv with the same context allocates %v times, want 0", allocs)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}
