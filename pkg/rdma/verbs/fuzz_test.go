package verbs

import (
	"encoding/binary"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// FuzzFrames feeds any sequence of received slots to a channel's engine, as
// a peer could send them: it never panics, never buffers beyond its window
// (one message larger than the window aside), and never delivers a message
// larger than the maximum.
func FuzzFrames(f *testing.F) {
	slots := func(frames ...[]byte) []byte {
		var out []byte
		for _, fr := range frames {
			out = binary.LittleEndian.AppendUint16(out, uint16(len(fr)))
			out = append(out, fr...)
		}
		return out
	}
	f.Add(slots(frameOf(header{typ: frameSetup, addr: 64 << 10, size: setupWindow(8, 1<<20)}, nil),
		frameOf(header{typ: frameData, frag: fragFirst | fragLast, seq: 1, total: 3, length: 3}, []byte("abc"))))
	f.Add(slots(frameOf(header{typ: frameSetup, addr: 64 << 10, size: setupWindow(8, 1<<20)}, nil),
		frameOf(header{typ: frameData, frag: fragFirst, hdrLen: 1, seq: 2, total: 4, length: 2}, []byte("hab")),
		frameOf(header{typ: frameData, frag: fragLast, seq: 2, total: 4, length: 2}, []byte("cd")),
		frameOf(header{typ: frameRegionAdd, total: 1, size: 100}, nil),
		frameOf(header{typ: frameAckReq, seq: 2}, nil),
		frameOf(header{typ: frameClose}, nil)))
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Fuzz(func(t *testing.T, stream []byte) {
		e := newEngine(64<<10, 4, 64<<10)
		e.stage = stageSetup
		e.sentSeq = 3
		var m rdma.Message
		for len(stream) >= 2 {
			n := min(int(binary.LittleEndian.Uint16(stream)), len(stream)-2, e.slotSize)
			slot := stream[2 : 2+n]
			stream = stream[2+n:]
			h, body, err := decodeFrame(slot)
			if err != nil {
				return
			}
			if _, err := e.handle(&h, body); err != nil {
				return
			}
			if q, b := e.queued(); q > e.winMsgs || b > max(e.winBytes, rdma.MaxPayloadSize) {
				t.Fatalf("buffered %d messages, %d bytes", q, b)
			}
			if len(stream)%3 == 0 && e.pop(&m) && len(m.Payload) > rdma.MaxPayloadSize {
				t.Fatalf("delivered %d bytes", len(m.Payload))
			}
		}
	})
}
