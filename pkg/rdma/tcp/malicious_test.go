package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// rawPeer authenticates on l for connID and returns the bare connection,
// ready for hand-made frames, and the listener's channel.
func rawPeer(t *testing.T, l rdma.Listener, connID string) (net.Conn, rdma.Channel) {
	t.Helper()
	secret := rdma.NewSecret()
	ep, err := l.Expect(connID, secret)
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	o := newOptions(nil)
	if err := handshake.Client(handshake.StreamConn{RW: nc}, Name, connID, &secret, handshake.ClientOptions{Early: true, Then: func() error { return writeSetup(nc, &o) }}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readSetup(nc); err != nil {
		t.Fatal(err)
	}
	ch, err := ep.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	return nc, ch
}

func frameBytes(f frame, body []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	f.encode(b)
	return append(b, body...)
}

// TestMaliciousPeer: a peer that breaks the protocol is disconnected,
// counted and logged, and nothing it sent that was still waiting is
// delivered; no memory outside a region is touched.
func TestMaliciousPeer(t *testing.T) {
	good := func(seq uint64) []byte {
		return frameBytes(frame{typ: frameData, hdrLen: 2, length: 3, seq: seq}, []byte("hhabc"))
	}
	tests := []struct {
		name  string
		bytes func(key rdma.RegionKey) []byte
	}{
		{"sequence gap", func(rdma.RegionKey) []byte { return append(good(1), good(3)...) }},
		{"write outside the region", func(k rdma.RegionKey) []byte {
			return append(good(1), frameBytes(frame{typ: frameWrite, length: 20, seq: 2, key: k, off: 90}, make([]byte, 20))...)
		}},
		{"write at a huge offset", func(k rdma.RegionKey) []byte {
			return append(good(1), frameBytes(frame{typ: frameWrite, length: 20, seq: 2, key: k, off: 1<<64 - 10}, make([]byte, 20))...)
		}},
		{"write into an unknown region", func(k rdma.RegionKey) []byte {
			return append(good(1), frameBytes(frame{typ: frameWrite, length: 1, seq: 2, key: k + 7}, []byte{1})...)
		}},
		{"beyond the window", func(rdma.RegionKey) []byte {
			var b []byte
			for i := range 17 {
				b = append(b, good(uint64(i+1))...)
			}
			return b
		}},
		{"length over the maximum", func(rdma.RegionKey) []byte {
			b := good(1)
			var h [headerSize]byte
			(&frame{typ: frameData, length: 1 << 31, seq: 2}).encode(h[:])
			return append(b, h[:]...)
		}},
		{"unknown frame type", func(rdma.RegionKey) []byte { return append(good(1), make([]byte, headerSize)...) }},
		{"acknowledges what was never sent", func(rdma.RegionKey) []byte { return append(good(1), frameBytes(frame{typ: frameAck, ack: 5}, nil)...) }},
		{"region deleted that does not exist", func(rdma.RegionKey) []byte {
			return append(good(1), frameBytes(frame{typ: frameRegionDel, key: 9}, nil)...)
		}},
		{"ack request ahead of the data", func(rdma.RegionKey) []byte {
			return append(good(1), frameBytes(frame{typ: frameAckReq, seq: 9}, nil)...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdmatest.CheckLeaks(t)
			logs := rdmatest.NewLogRecorder()
			p := New(WithLogger(logs.Logger()), WithWindow(16, 1<<20), WithIdle(time.Millisecond))
			l, err := p.Listen(context.Background(), "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			nc, victim := rawPeer(t, l, "victim")
			region, err := victim.RegisterRegion(100)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Write(tt.bytes(region.Key())); err != nil {
				t.Fatal(err)
			}
			// Nobody receives: the background reader finds the violation.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			select {
			case <-victim.Done():
			case <-ctx.Done():
				t.Fatal("the victim did not disconnect the peer")
			}
			if err := victim.Err(); !errors.Is(err, rdma.ErrProtocol) {
				t.Fatalf("victim's error: %v", err)
			}
			var m rdma.Message
			if err := victim.Recv(ctx, &m); !errors.Is(err, rdma.ErrProtocol) {
				t.Errorf("Recv after the violation: %v (delivered %q)", err, m.Payload)
			}
			for i, c := range region.Bytes() {
				if c != 0 {
					t.Fatalf("region byte %d written", i)
				}
			}
			if st := l.Stats(); st.ProtocolErrors != 1 {
				t.Errorf("listener stats %+v", st)
			}
			if logs.WaitFor(ctx, func(e *logrus.Entry) bool { return e.Message == core.LogProtocolViolation }) == nil {
				t.Error("the violation was not logged")
			}
			// The peer was disconnected.
			_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				t.Errorf("the peer's connection: %v", err)
			}
		})
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestHandshakeTimeout: a connection that never speaks is dropped after the
// handshake timeout and counted.
func TestHandshakeTimeout(t *testing.T) {
	rdmatest.CheckLeaks(t)
	l, err := New(WithHandshakeTimeout(50*time.Millisecond), WithLogger(rdmatest.NewLogRecorder().Logger())).Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var d net.Dialer
	nc, err := d.DialContext(context.Background(), "tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("read from a silent connection: %d, %v; want it closed", n, err)
	}
	if st := l.Stats(); st.HandshakeFailures != 1 {
		t.Errorf("stats %+v", st)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestDialUnreachable(t *testing.T) {
	l, err := New().Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr()
	_ = l.Close()
	_, err = New().Dial(context.Background(), addr, "x", rdma.NewSecret())
	if !errors.Is(err, rdma.ErrUnreachable) {
		t.Errorf("dial a closed port: %v", err)
	}
	if _, err := New().Dial(context.Background(), addr, "", rdma.NewSecret()); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Errorf("dial with an empty ID: %v", err)
	}
}

// TestRecvResumesAfterContext: a Recv whose context ends in the middle of
// a message leaves the part it read to the next Recv, which returns the
// message whole.
func TestRecvResumesAfterContext(t *testing.T) {
	rdmatest.CheckLeaks(t)
	l, err := New(WithLogger(rdmatest.NewLogRecorder().Logger())).Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, ch := rawPeer(t, l, "resume")
	payload := rdmatest.Pattern(9, 200<<10)
	frame := frameBytes(frame{typ: frameData, hdrLen: 3, length: uint32(len(payload)), seq: 1}, append([]byte("hdr"), payload...))
	half := len(frame) / 2
	if _, err := nc.Write(frame[:half]); err != nil {
		t.Fatal(err)
	}
	var m rdma.Message
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = ch.Recv(ctx, &m)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv of half a message: %v", err)
	}
	if _, err := nc.Write(frame[half:]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var m2 rdma.Message
	if err := ch.Recv(ctx, &m2); err != nil {
		t.Fatal(err)
	}
	if string(m2.Header) != "hdr" || m2.Seq != 1 {
		t.Errorf("message %d header %q", m2.Seq, m2.Header)
	}
	if err := rdmatest.CheckPattern(m2.Payload, 9); err != nil {
		t.Error(err)
	}
}
