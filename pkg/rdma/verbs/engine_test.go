package verbs

import (
	"errors"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

func frameOf(h header, body []byte) []byte {
	b := make([]byte, headerSize+len(body))
	h.encode(b)
	copy(b[headerSize:], body)
	return b
}

// feed decodes and applies a frame as the completion goroutine does.
func feed(e *engine, h header, body []byte) (event, error) {
	if h.typ != frameData || h.frag&fragFirst == 0 {
		h.length = uint32(len(body))
	}
	slot := frameOf(h, body)
	dh, db, err := decodeFrame(slot)
	if err != nil {
		return evNone, err
	}
	return e.handle(&dh, db)
}

func openEngine(t *testing.T) *engine {
	t.Helper()
	e := newEngine(64<<10, 4, 1<<20)
	e.stage = stageSetup
	if ev, err := feed(e, header{typ: frameSetup, addr: 64 << 10, size: setupWindow(8, 1<<20)}, nil); err != nil || ev&evSetup == 0 {
		t.Fatalf("setup: %v %v", ev, err)
	}
	if e.peerSlot != 64<<10 || e.peerWinMsgs != 8 || e.peerWinBytes != 1<<20 {
		t.Fatalf("peer setup %+v", e)
	}
	return e
}

func TestEngineStages(t *testing.T) {
	e := newEngine(64<<10, 4, 1<<20)
	if _, err := feed(e, header{typ: frameData, frag: fragFirst | fragLast, seq: 1}, nil); !errors.Is(err, rdma.ErrProtocol) {
		t.Errorf("data before the handshake: %v", err)
	}
	hello := handshake.Append(nil, &handshake.Message{Type: handshake.TypeHello, ConnID: "x"})
	if ev, err := feed(e, header{typ: frameHandshake}, hello); err != nil || ev&evHandshake == 0 || string(e.hs) != string(hello) {
		t.Errorf("handshake frame: %v %v", ev, err)
	}
	if _, err := feed(e, header{typ: frameSetup, addr: 64 << 10, size: setupWindow(8, 1<<20)}, nil); !errors.Is(err, rdma.ErrProtocol) {
		t.Errorf("setup before authentication: %v", err)
	}
	e.stage = stageSetup
	for _, h := range []header{
		{typ: frameSetup, addr: 100, size: setupWindow(8, 1<<20)},
		{typ: frameSetup, addr: 64 << 10, size: setupWindow(0, 1<<20)},
		{typ: frameSetup, addr: 64 << 10, size: setupWindow(8, 1<<12)},
		{typ: frameAck},
	} {
		if _, err := feed(e, h, nil); !errors.Is(err, rdma.ErrProtocol) {
			t.Errorf("setup %+v: %v", h, err)
		}
	}
}

func TestEngineMessages(t *testing.T) {
	e := openEngine(t)
	body := append([]byte("hd"), []byte("hello ")...)
	if ev, err := feed(e, header{typ: frameData, frag: fragFirst, flags: rdma.FlagRetry, hdrLen: 2, length: 6, seq: 5, total: 11}, body); err != nil || ev&evMessage != 0 {
		t.Fatalf("first fragment: %v %v", ev, err)
	}
	if ev, err := feed(e, header{typ: frameData, frag: fragLast, seq: 5, total: 11}, []byte("world")); err != nil || ev&evMessage == 0 {
		t.Fatalf("last fragment: %v %v", ev, err)
	}
	var m rdma.Message
	if !e.pop(&m) || string(m.Payload) != "hello world" || string(m.Header) != "hd" || !m.Retry() || m.Seq != 5 || e.delivered != 5 {
		t.Fatalf("popped %+v", m)
	}
	if e.pop(&m) {
		t.Fatal("popped twice")
	}
	// Acknowledgements must stay within what was sent.
	e.sentSeq = 3
	if ev, err := feed(e, header{typ: frameAck, ack: 2}, nil); err != nil || ev&evAcked == 0 || e.peerAck != 2 {
		t.Errorf("ack: %v %v", ev, err)
	}
	for _, ack := range []uint64{1, 4} {
		if _, err := feed(e, header{typ: frameAck, ack: ack}, nil); !errors.Is(err, rdma.ErrProtocol) {
			t.Errorf("ack %d accepted", ack)
		}
	}
}

func TestEngineRejects(t *testing.T) {
	tests := []struct {
		name string
		h    header
		body []byte
	}{
		{"old sequence number", header{typ: frameData, frag: fragFirst | fragLast, seq: 0, total: 1, length: 1}, []byte{1}},
		{"continuation first", header{typ: frameData, frag: fragLast, seq: 1, total: 1, length: 1}, []byte{1}},
		{"too large", header{typ: frameData, frag: fragFirst, seq: 1, total: rdma.MaxPayloadSize + 1, length: 1}, []byte{1}},
		{"more than announced", header{typ: frameData, frag: fragFirst | fragLast, seq: 1, total: 1, length: 2}, []byte{1, 2}},
		{"ends early", header{typ: frameData, frag: fragFirst | fragLast, seq: 1, total: 3, length: 1}, []byte{1}},
		{"unknown flags", header{typ: frameData, frag: fragFirst | fragLast, flags: 0x40, seq: 1}, nil},
		{"region key 0", header{typ: frameRegionAdd, size: 10}, nil},
		{"region wraps", header{typ: frameRegionAdd, total: 1, addr: 1<<64 - 4, size: 10}, nil},
		{"region too large", header{typ: frameRegionAdd, total: 1, size: rdma.MaxRegionSize + 1}, nil},
		{"unknown region deleted", header{typ: frameRegionDel, total: 3}, nil},
		{"ack request ahead", header{typ: frameAckReq, seq: 9}, nil},
		{"handshake after setup", header{typ: frameHandshake}, []byte{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := openEngine(t)
			h := tt.h
			slot := frameOf(h, tt.body)
			dh, db, err := decodeFrame(slot)
			if err == nil {
				_, err = e.handle(&dh, db)
			}
			if !errors.Is(err, rdma.ErrProtocol) {
				t.Errorf("accepted: %v", err)
			}
		})
	}
}

func TestEngineWindow(t *testing.T) {
	e := openEngine(t) // window: 4 messages
	for i := range 4 {
		if _, err := feed(e, header{typ: frameData, frag: fragFirst | fragLast, seq: uint64(i + 1), total: 1, length: 1}, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := feed(e, header{typ: frameData, frag: fragFirst | fragLast, seq: 5, total: 1, length: 1}, []byte{1}); !errors.Is(err, rdma.ErrProtocol) {
		t.Errorf("a fifth message in a window of four: %v", err)
	}
	if n, b := e.queued(); n != 4 || b != 4 {
		t.Errorf("queued %d, %d", n, b)
	}
	e.drop()
	if n, _ := e.queued(); n != 0 {
		t.Error("drop left messages")
	}
}

func TestEngineRegionsAndClose(t *testing.T) {
	e := openEngine(t)
	if ev, err := feed(e, header{typ: frameRegionAdd, total: 7, rkey: 9, addr: 0x1000, size: 4096}, nil); err != nil || ev&evRegion == 0 {
		t.Fatal(err)
	}
	if r := e.remote[7]; r.addr != 0x1000 || r.rkey != 9 || r.size != 4096 {
		t.Errorf("region %+v", r)
	}
	if _, err := feed(e, header{typ: frameRegionAdd, total: 7, size: 1}, nil); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("region added twice")
	}
	if _, err := feed(e, header{typ: frameRegionDel, total: 7}, nil); err != nil || len(e.remote) != 0 {
		t.Error(err)
	}
	if ev, err := feed(e, header{typ: frameClose}, nil); err != nil || ev&evClose == 0 {
		t.Fatal(err)
	}
	if _, err := feed(e, header{typ: frameAck}, nil); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("frame after the close accepted")
	}
}

func TestDecodeFrameLengths(t *testing.T) {
	if _, _, err := decodeFrame(make([]byte, headerSize-1)); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("short frame")
	}
	slot := frameOf(header{typ: frameData, hdrLen: 2, length: 3}, []byte{1, 2, 3, 4})
	if _, _, err := decodeFrame(slot); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("length mismatch accepted")
	}
	slot = frameOf(header{typ: frameAck, hdrLen: 1}, []byte{1})
	if _, _, err := decodeFrame(slot); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("ack with a message header accepted")
	}
	if m, b := unpackWindow(setupWindow(300, 8<<20)); m != 300 || b != 8<<20 {
		t.Errorf("window %d %d", m, b)
	}
}

func TestEngineDialerMovesOnAtOK(t *testing.T) {
	e := newEngine(64<<10, 4, 1<<20)
	ok := handshake.Append(nil, &handshake.Message{Type: handshake.TypeResult, Code: handshake.CodeOK})
	refused := handshake.Append(nil, &handshake.Message{Type: handshake.TypeResult, Code: handshake.CodeAuth})
	if _, err := feed(e, header{typ: frameHandshake}, refused); err != nil || e.stage != stageHandshake {
		t.Fatalf("a refusal moved the stage: %v %d", err, e.stage)
	}
	if _, err := feed(e, header{typ: frameHandshake}, ok); err != nil || e.stage != stageSetup {
		t.Fatalf("the OK did not move the dialer on: %v %d", err, e.stage)
	}
	s := newEngine(64<<10, 4, 1<<20)
	s.serverRole = true
	if _, err := feed(s, header{typ: frameHandshake}, ok); err != nil || s.stage != stageHandshake {
		t.Fatal("a listener moved on by an OK it did not send")
	}
}
