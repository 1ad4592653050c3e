package tcp

import (
	"encoding/binary"
	"fmt"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// frameType is the kind of a frame.
type frameType uint8

const (
	frameData      frameType = 1 // a message: application header and payload
	frameWrite     frameType = 2 // a one-sided write into the receiver's region
	frameAck       frameType = 3 // an acknowledgement alone
	frameAckReq    frameType = 4 // asks for an acknowledgement of seq
	frameRegionAdd frameType = 5 // the sender registered region key of size off
	frameRegionDel frameType = 6 // the sender closed region key
	frameClose     frameType = 7 // the sender closes the channel cleanly
)

// headerSize is the size of a frame header. Layout (little endian):
//
//	0  type    u8
//	1  flags   u8   (rdma.Flags; data frames only)
//	2  hdrLen  u8   (application header length; data frames only)
//	3  zero    u8
//	4  len     u32  (payload or write length)
//	8  seq     u64  (data and write: sequence number; ack request: the one to acknowledge)
//	16 ack     u64  (cumulative acknowledgement of the peer's sequence numbers)
//	24 key     u32  (write, region add and delete: region key)
//	28 zero    u32
//	32 off     u64  (write: offset; region add: size)
const headerSize = 40

// frame is a decoded frame header.
type frame struct {
	typ    frameType
	flags  rdma.Flags
	hdrLen uint8
	length uint32
	seq    uint64
	ack    uint64
	key    rdma.RegionKey
	off    uint64
}

func (f *frame) encode(b []byte) {
	_ = b[headerSize-1]
	b[0] = byte(f.typ)
	b[1] = byte(f.flags)
	b[2] = f.hdrLen
	b[3] = 0
	binary.LittleEndian.PutUint32(b[4:], f.length)
	binary.LittleEndian.PutUint64(b[8:], f.seq)
	binary.LittleEndian.PutUint64(b[16:], f.ack)
	binary.LittleEndian.PutUint32(b[24:], uint32(f.key))
	binary.LittleEndian.PutUint32(b[28:], 0)
	binary.LittleEndian.PutUint64(b[32:], f.off)
}

// decodeFrame parses and checks a header on its own: everything that does
// not depend on the channel's state. The caller checks sequence numbers,
// acknowledgements, windows and regions.
func decodeFrame(b []byte) (frame, error) {
	if len(b) < headerSize {
		return frame{}, fmt.Errorf("%w: short frame header", rdma.ErrProtocol)
	}
	f := frame{
		typ:    frameType(b[0]),
		flags:  rdma.Flags(b[1]),
		hdrLen: b[2],
		length: binary.LittleEndian.Uint32(b[4:]),
		seq:    binary.LittleEndian.Uint64(b[8:]),
		ack:    binary.LittleEndian.Uint64(b[16:]),
		key:    rdma.RegionKey(binary.LittleEndian.Uint32(b[24:])),
		off:    binary.LittleEndian.Uint64(b[32:]),
	}
	if b[3] != 0 || binary.LittleEndian.Uint32(b[28:]) != 0 {
		return frame{}, fmt.Errorf("%w: reserved frame bits set", rdma.ErrProtocol)
	}
	noBody := func() error {
		if f.flags != 0 || f.hdrLen != 0 || f.length != 0 {
			return fmt.Errorf("%w: frame type %d with a body or flags", rdma.ErrProtocol, f.typ)
		}
		return nil
	}
	switch f.typ {
	case frameData:
		if f.flags&^rdma.KnownFlags != 0 {
			return frame{}, fmt.Errorf("%w: unknown message flags %#x", rdma.ErrProtocol, uint8(f.flags))
		}
		if f.hdrLen > rdma.MaxHeaderSize || f.length > rdma.MaxPayloadSize {
			return frame{}, fmt.Errorf("%w: message header %d and payload %d bytes exceed the maximum", rdma.ErrProtocol, f.hdrLen, f.length)
		}
		if f.key != 0 || f.off != 0 {
			return frame{}, fmt.Errorf("%w: data frame with a region", rdma.ErrProtocol)
		}
	case frameWrite:
		if f.flags != 0 || f.hdrLen != 0 || f.length > rdma.MaxPayloadSize {
			return frame{}, fmt.Errorf("%w: malformed write of %d bytes", rdma.ErrProtocol, f.length)
		}
	case frameAck, frameAckReq, frameClose:
		if err := noBody(); err != nil {
			return frame{}, err
		}
		if f.key != 0 || f.off != 0 || (f.typ != frameAckReq && f.seq != 0) {
			return frame{}, fmt.Errorf("%w: frame type %d with stray fields", rdma.ErrProtocol, f.typ)
		}
	case frameRegionAdd, frameRegionDel:
		if err := noBody(); err != nil {
			return frame{}, err
		}
		if f.key == 0 || f.seq != 0 {
			return frame{}, fmt.Errorf("%w: region frame with key 0 or a sequence number", rdma.ErrProtocol)
		}
		if f.typ == frameRegionAdd && (f.off == 0 || f.off > rdma.MaxRegionSize) {
			return frame{}, fmt.Errorf("%w: region of %d bytes", rdma.ErrProtocol, f.off)
		}
		if f.typ == frameRegionDel && f.off != 0 {
			return frame{}, fmt.Errorf("%w: region delete with a size", rdma.ErrProtocol)
		}
	default:
		return frame{}, fmt.Errorf("%w: unknown frame type %d", rdma.ErrProtocol, f.typ)
	}
	return f, nil
}

// setupSize is the size of the setup message each side sends after the
// handshake: magic "TTS1", window messages (u32), window bytes (u32),
// reserved (u32), little endian.
const setupSize = 16

// Bounds of the windows a peer may announce.
const (
	minWindowMessages = 1
	maxWindowMessages = 1 << 16
	minWindowBytes    = 64 << 10
	maxWindowBytes    = 1 << 30
)

func encodeSetup(b []byte, msgs, bytes int) {
	copy(b, "TTS1")
	binary.LittleEndian.PutUint32(b[4:], uint32(msgs))
	binary.LittleEndian.PutUint32(b[8:], uint32(bytes))
	binary.LittleEndian.PutUint32(b[12:], 0)
}

func decodeSetup(b []byte) (msgs, bytes int, err error) {
	if len(b) != setupSize || string(b[:4]) != "TTS1" || binary.LittleEndian.Uint32(b[12:]) != 0 {
		return 0, 0, fmt.Errorf("%w: malformed setup", rdma.ErrProtocol)
	}
	m, n := binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
	if m < minWindowMessages || m > maxWindowMessages || n < minWindowBytes || n > maxWindowBytes {
		return 0, 0, fmt.Errorf("%w: window of %d messages and %d bytes out of range", rdma.ErrProtocol, m, n)
	}
	return int(m), int(n), nil
}
