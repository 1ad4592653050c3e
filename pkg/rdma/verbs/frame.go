package verbs

import (
	"encoding/binary"
	"fmt"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// frameType is the kind of a frame (one send of one slot).
type frameType uint8

const (
	frameHandshake frameType = 1 // a handshake message
	frameSetup     frameType = 2 // the sender's receive slot size and window
	frameData      frameType = 3 // a fragment of a message
	frameAck       frameType = 4 // an acknowledgement alone
	frameAckReq    frameType = 5 // asks for an acknowledgement of seq
	frameRegionAdd frameType = 6 // region key (total) at addr, size bytes, remote key rkey
	frameRegionDel frameType = 7 // region key (total) is gone
	frameClose     frameType = 8 // the sender closes cleanly
)

// Fragment bits of a data frame.
const (
	fragFirst = 1
	fragLast  = 2
)

// headerSize is the size of a frame header. Layout (little endian):
//
//	0  type   u8
//	1  flags  u8   rdma.Flags (first fragment)
//	2  hdrLen u8   application header length (first fragment)
//	3  frag   u8   fragFirst | fragLast
//	4  len    u32  payload bytes in this frame
//	8  seq    u64  message sequence number; ack request: the one to acknowledge
//	16 ack    u64  last message of the receiver's peer returned by Recv
//	24 total  u32  data: the message's payload length; region: the key
//	28 rkey   u32  region add: the remote key
//	32 addr   u64  region add: the address; setup: receive slot size
//	40 size   u64  region add: the size; setup: window messages<<32 | window bytes>>12
const headerSize = 48

type header struct {
	typ    frameType
	flags  rdma.Flags
	hdrLen uint8
	frag   uint8
	length uint32
	seq    uint64
	ack    uint64
	total  uint32
	rkey   uint32
	addr   uint64
	size   uint64
}

func (h *header) encode(b []byte) {
	_ = b[headerSize-1]
	b[0], b[1], b[2], b[3] = byte(h.typ), byte(h.flags), h.hdrLen, h.frag
	binary.LittleEndian.PutUint32(b[4:], h.length)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.ack)
	binary.LittleEndian.PutUint32(b[24:], h.total)
	binary.LittleEndian.PutUint32(b[28:], h.rkey)
	binary.LittleEndian.PutUint64(b[32:], h.addr)
	binary.LittleEndian.PutUint64(b[40:], h.size)
}

// decodeFrame parses a received slot of n bytes (the completion's length,
// never more than the slot): the header, and a body whose length must be
// exactly what the header says.
func decodeFrame(slot []byte) (header, []byte, error) {
	if len(slot) < headerSize {
		return header{}, nil, fmt.Errorf("%w: frame of %d bytes", rdma.ErrProtocol, len(slot))
	}
	h := header{
		typ:    frameType(slot[0]),
		flags:  rdma.Flags(slot[1]),
		hdrLen: slot[2],
		frag:   slot[3],
		length: binary.LittleEndian.Uint32(slot[4:]),
		seq:    binary.LittleEndian.Uint64(slot[8:]),
		ack:    binary.LittleEndian.Uint64(slot[16:]),
		total:  binary.LittleEndian.Uint32(slot[24:]),
		rkey:   binary.LittleEndian.Uint32(slot[28:]),
		addr:   binary.LittleEndian.Uint64(slot[32:]),
		size:   binary.LittleEndian.Uint64(slot[40:]),
	}
	body := slot[headerSize:]
	if h.typ < frameHandshake || h.typ > frameClose {
		return header{}, nil, fmt.Errorf("%w: frame type %d", rdma.ErrProtocol, h.typ)
	}
	if h.typ != frameData && (h.flags != 0 || h.hdrLen != 0 || h.frag != 0) {
		return header{}, nil, fmt.Errorf("%w: frame type %d with message fields", rdma.ErrProtocol, h.typ)
	}
	if uint64(h.hdrLen)+uint64(h.length) != uint64(len(body)) {
		return header{}, nil, fmt.Errorf("%w: frame says %d+%d bytes, carries %d", rdma.ErrProtocol, h.hdrLen, h.length, len(body))
	}
	return h, body, nil
}

// setupWindow packs a window into a setup frame's size field.
func setupWindow(msgs, bytes int) uint64 { return uint64(msgs)<<32 | uint64(bytes>>12) }

func unpackWindow(v uint64) (msgs, bytes int) { return int(v >> 32), int(v&0xffffffff) << 12 }
