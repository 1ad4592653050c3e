package call_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/rdma"
)

// recording is a channel that remembers the payload slice of every call it
// sent and a copy of its bytes, and may claim that nothing is acknowledged.
type recording struct {
	rdma.Channel
	neverAcked bool

	mu   sync.Mutex
	sent []sentPayload
}

type sentPayload struct {
	slice []byte // the slice the caller handed over
	bytes []byte // what it held then
}

func (r *recording) Send(ctx context.Context, m *rdma.Message) (uint64, error) {
	r.mu.Lock()
	r.sent = append(r.sent, sentPayload{m.Payload, bytes.Clone(m.Payload)})
	r.mu.Unlock()
	return r.Channel.Send(ctx, m)
}

func (r *recording) Acked() uint64 {
	if r.neverAcked {
		return 0
	}
	return r.Channel.Acked()
}

// serveUntilClosed serves h on server; stop closes client and checks that
// Serve then ended with an error.
func serveUntilClosed(ctx context.Context, t *testing.T, client, server rdma.Channel, h call.Handler) (stop func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call.Serve(ctx, server, h, quiet) }()
	return func() {
		t.Helper()
		_ = client.Close()
		if err := <-done; err == nil {
			t.Error("Serve returned no error after the channel closed")
		}
	}
}

// TestRequestBufferReuse checks when a finished call's request buffer goes
// to the next call: only once the channel acknowledged it, so that what a
// channel may still refer to (to deliver it, or for Unacked) never changes.
func TestRequestBufferReuse(t *testing.T) {
	tests := []struct {
		name       string
		neverAcked bool
		wantReuse  bool
	}{
		{name: "acknowledged: the buffer goes to the next call", wantReuse: true},
		{name: "unacknowledged: the channel keeps the buffer", neverAcked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			client, server := inprocPair(t, 0)
			stop := serveUntilClosed(ctx, t, client, server, func(_ context.Context, req *call.Request) ([]byte, error) {
				return req.Payload, nil
			})
			rec := &recording{Channel: client, neverAcked: tt.neverAcked}
			c := call.NewCaller(quiet)
			c.Bind(rec, nil, nil)
			const n = 40 // more than a round of the lone calls' buffers
			for i := range n {
				p := fmt.Appendf(nil, "call-%02d", i)
				if reply, err := c.Call(ctx, nil, p); err != nil || !bytes.Equal(reply, p) {
					t.Fatalf("call %d: %q, %v", i, reply, err)
				}
			}
			c.Close()
			stop()

			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.sent) != n {
				t.Fatalf("%d calls sent, want %d", len(rec.sent), n)
			}
			reused := false
			for i, s := range rec.sent {
				if !bytes.Equal(s.slice, s.bytes) {
					if tt.neverAcked {
						t.Errorf("call %d: its unacknowledged payload changed to %q (was %q)", i, s.slice, s.bytes)
					}
					reused = true
				}
			}
			if reused != tt.wantReuse {
				t.Errorf("buffers reused: %v, want %v", reused, tt.wantReuse)
			}
		})
	}
}

// TestAppendCall checks that the answer is appended to the caller's buffer
// and that a failed call returns the buffer as it was.
func TestAppendCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, server := inprocPair(t, 0)
	stop := serveUntilClosed(ctx, t, client, server, func(_ context.Context, req *call.Request) ([]byte, error) {
		if string(req.Payload) == "fail" {
			return nil, errors.New("refused")
		}
		return req.Payload, nil
	})
	c := call.NewCaller(quiet)
	c.Bind(client, nil, nil)
	defer func() {
		c.Close()
		stop()
	}()

	tests := []struct {
		name    string
		dst     []byte
		payload string
		want    string
		remote  bool
	}{
		{name: "nil buffer", payload: "abc", want: "abc"},
		{name: "appended after what the buffer holds", dst: []byte("x:"), payload: "abc", want: "x:abc"},
		{name: "room to spare", dst: make([]byte, 0, 64), payload: "abc", want: "abc"},
		{name: "room after what the buffer holds", dst: append(make([]byte, 0, 64), "x:"...), payload: "abc", want: "x:abc"},
		{name: "exact room", dst: append(make([]byte, 0, 5), "x:"...), payload: "abc", want: "x:abc"},
		{name: "too little room", dst: append(make([]byte, 0, 4), "x:"...), payload: "abc", want: "x:abc"},
		{name: "empty answer", dst: []byte("x:"), payload: "", want: "x:"},
		{name: "handler error leaves the buffer", dst: []byte("x:"), payload: "fail", want: "x:", remote: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.AppendCall(ctx, tt.dst, nil, []byte(tt.payload))
			if tt.remote != call.IsRemote(err) || (!tt.remote && err != nil) {
				t.Fatalf("error %v, want remote: %v", err, tt.remote)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// The answer goes into dst's array exactly when it has room.
			if cap(tt.dst) > 0 {
				same := &got[:1][0] == &tt.dst[:1][0]
				if room := cap(tt.dst) >= len(tt.want); same != room {
					t.Errorf("answered in the buffer's array: %v, want %v (room %d for %d)", same, room, cap(tt.dst), len(tt.want))
				}
			}
		})
	}

	// With a buffer that has room, a call allocates nothing on either
	// side: the request buffer and the call's record are reused.
	reply := make([]byte, 0, 64)
	payload := make([]byte, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		var err error
		if reply, err = c.AppendCall(ctx, reply[:0], nil, payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a call allocates %v times, want 0", allocs)
	}
}
