package tcp

import (
	"errors"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []frame{
		{typ: frameData, flags: rdma.FlagRetry, hdrLen: 64, length: rdma.MaxPayloadSize, seq: 1<<63 + 5, ack: 7},
		{typ: frameWrite, length: 10, seq: 2, ack: 1, key: 3, off: 1 << 40},
		{typ: frameAck, ack: 99},
		{typ: frameAckReq, seq: 4, ack: 1},
		{typ: frameRegionAdd, key: 1, off: rdma.MaxRegionSize},
		{typ: frameRegionDel, key: 1},
		{typ: frameClose, ack: 3},
	}
	for _, f := range frames {
		var b [headerSize]byte
		f.encode(b[:])
		got, err := decodeFrame(b[:])
		if err != nil || got != f {
			t.Errorf("%+v: decoded %+v, %v", f, got, err)
		}
	}
}

func TestFrameRejects(t *testing.T) {
	tests := map[string]frame{
		"unknown type":           {typ: 9},
		"zero type":              {typ: 0},
		"unknown flags":          {typ: frameData, flags: 0x80},
		"header too long":        {typ: frameData, hdrLen: rdma.MaxHeaderSize + 1},
		"payload too long":       {typ: frameData, length: rdma.MaxPayloadSize + 1},
		"data with a region":     {typ: frameData, key: 1},
		"write with a header":    {typ: frameWrite, hdrLen: 1, key: 1},
		"write too long":         {typ: frameWrite, length: rdma.MaxPayloadSize + 1, key: 1},
		"ack with a body":        {typ: frameAck, length: 1},
		"ack with a seq":         {typ: frameAck, seq: 1},
		"close with flags":       {typ: frameClose, flags: 1},
		"region key 0":           {typ: frameRegionAdd, off: 10},
		"region of 0 bytes":      {typ: frameRegionAdd, key: 1},
		"region too large":       {typ: frameRegionAdd, key: 1, off: rdma.MaxRegionSize + 1},
		"region delete size":     {typ: frameRegionDel, key: 1, off: 1},
		"region add with a body": {typ: frameRegionAdd, key: 1, off: 1, length: 1},
	}
	for name, f := range tests {
		var b [headerSize]byte
		f.encode(b[:])
		if _, err := decodeFrame(b[:]); !errors.Is(err, rdma.ErrProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var b [headerSize]byte
	(&frame{typ: frameAck}).encode(b[:])
	b[3] = 1
	if _, err := decodeFrame(b[:]); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("reserved byte accepted")
	}
	if _, err := decodeFrame(b[:10]); !errors.Is(err, rdma.ErrProtocol) {
		t.Error("short header accepted")
	}
}

func TestSetup(t *testing.T) {
	var b [setupSize]byte
	encodeSetup(b[:], 256, 8<<20)
	if m, n, err := decodeSetup(b[:]); err != nil || m != 256 || n != 8<<20 {
		t.Fatalf("%d %d %v", m, n, err)
	}
	for _, w := range [][2]int{{0, 1 << 20}, {maxWindowMessages + 1, 1 << 20}, {1, minWindowBytes - 1}, {1, maxWindowBytes + 1}} {
		encodeSetup(b[:], w[0], w[1])
		if _, _, err := decodeSetup(b[:]); !errors.Is(err, rdma.ErrProtocol) {
			t.Errorf("window %v accepted", w)
		}
	}
	if _, _, err := decodeSetup(b[:8]); err == nil {
		t.Error("short setup accepted")
	}
}
