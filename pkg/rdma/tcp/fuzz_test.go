package tcp

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// fakeConn feeds a fixed byte stream to a channel and swallows what it writes.
type fakeConn struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

func (c *fakeConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *fakeConn) Write(p []byte) (int, error) { return len(p), nil }

func (c *fakeConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *fakeConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

func fuzzSeeds() [][]byte {
	data := func(seq, ack uint64, hdr, payload string, flags rdma.Flags) []byte {
		return frameBytes(frame{typ: frameData, flags: flags, hdrLen: uint8(len(hdr)), length: uint32(len(payload)), seq: seq, ack: ack}, []byte(hdr+payload))
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		nil,
		data(1, 0, "", "", 0),
		join(data(1, 0, "h", "payload", rdma.FlagRetry), data(2, 0, "", "second", 0)),
		join(data(1, 0, "", "x", 0), frameBytes(frame{typ: frameWrite, length: 4, seq: 2, key: 1, off: 10}, []byte("abcd"))),
		join(frameBytes(frame{typ: frameRegionAdd, key: 3, off: 4096}, nil), frameBytes(frame{typ: frameRegionDel, key: 3}, nil)),
		join(data(1, 0, "", "y", 0), frameBytes(frame{typ: frameAckReq, seq: 1}, nil), frameBytes(frame{typ: frameAck}, nil)),
		join(data(1, 0, "", "z", 0), frameBytes(frame{typ: frameClose}, nil)),
		frameBytes(frame{typ: frameWrite, length: 20, seq: 1, key: 1, off: 4090}, make([]byte, 20)),
		frameBytes(frame{typ: frameData, length: rdma.MaxPayloadSize, seq: 1}, make([]byte, 100)),
	}
}

// FuzzFrames feeds any byte stream to a channel as if a peer sent it after
// the handshake: the receiver must never panic, never write outside its
// region, and never buffer more than its window.
func FuzzFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	f.Fuzz(func(t *testing.T, stream []byte) {
		o := newOptions([]Option{WithWindow(8, 64<<10), WithLogger(log), WithIdle(time.Hour)})
		fc := &fakeConn{r: bytes.NewReader(stream)}
		c := newChannel(context.Background(), &o, fc, "fuzz", 8, 64<<10, log, nil)
		defer c.Close()
		region, err := c.RegisterRegion(4096)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var m rdma.Message
		for range 64 {
			if err := c.Recv(ctx, &m); err != nil {
				break
			}
			if len(m.Payload) > rdma.MaxPayloadSize || len(m.Header) > rdma.MaxHeaderSize {
				t.Fatalf("delivered %d+%d bytes", len(m.Header), len(m.Payload))
			}
		}
		if err := ctx.Err(); err != nil {
			t.Fatal("Recv hung on a finite stream")
		}
		if st := c.Stats(); st.Queued > o.windowMessages || st.QueuedBytes > max(o.windowBytes, rdma.MaxPayloadSize) {
			t.Fatalf("buffered %d messages, %d bytes", st.Queued, st.QueuedBytes)
		}
		if len(region.Bytes()) != 4096 {
			t.Fatal("region changed size")
		}
	})
}
