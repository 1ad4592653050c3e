package verbs

import (
	"fmt"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

// Bounds a peer's setup must respect.
const (
	minSlotSize    = 4 << 10
	maxSlotSize    = 1 << 20
	maxWindowMsgs  = 1 << 16
	minWindowBytes = 64 << 10
	maxWindowBytes = 1 << 30
	maxRegions     = 1024
)

// stage of a channel's life, as far as received frames go.
const (
	stageHandshake = iota // only handshake frames
	stageSetup            // authenticated: the peer's setup comes next
	stageOpen             // messages, regions, acknowledgements
	stageClosed           // the peer said goodbye
)

// rxMsg is a message waiting for Recv.
type rxMsg struct {
	seq     uint64
	flags   rdma.Flags
	hdrLen  uint8
	hdr     [rdma.MaxHeaderSize]byte
	payload []byte
}

// remoteRegion is a region the peer registered.
type remoteRegion struct {
	addr uint64
	rkey uint32
	size uint64
}

// event says what a frame did, for the transport to act on: a set of bits.
type event uint8

const (
	evNone      event = 0
	evHandshake event = 1 << iota // handshake bytes to pass on (engine.hs)
	evSetup                       // the peer's setup arrived
	evMessage                     // a message was queued
	evAcked                       // the peer acknowledged more of our messages
	evAckReq                      // the peer wants an acknowledgement now
	evRegion                      // the peer's regions changed
	evClose                       // the peer closed cleanly
)

// engine is the transport-independent state of a verbs channel: what every
// received frame means, checked before a byte of it is copied. It is
// guarded by the channel's mutex.
type engine struct {
	serverRole        bool // the listening side (the dialer moves on when it reads the listener's OK)
	slotSize          int  // our receive slots
	winMsgs, winBytes int  // our window
	stage             int
	hs                []byte // the last handshake message

	// what the peer told us
	peerSlot                  int
	peerWinMsgs, peerWinBytes int
	remote                    map[rdma.RegionKey]remoteRegion

	// receiving
	lastSeq   uint64 // the last message whose first fragment arrived
	delivered uint64 // the last message returned by Recv: our acknowledgement
	asm       rxMsg  // the message being reassembled
	asmActive bool
	asmGot    int
	queue     []rxMsg
	qbytes    int
	ackWant   uint64

	// sending (kept here to check the peer's acknowledgements)
	sentSeq uint64 // our last message sequence number
	peerAck uint64 // the last of our messages the peer returned by Recv
}

func newEngine(slotSize, winMsgs, winBytes int) *engine {
	return &engine{slotSize: slotSize, winMsgs: winMsgs, winBytes: winBytes, remote: make(map[rdma.RegionKey]remoteRegion)}
}

// queued reports the messages and bytes waiting for Recv, including the
// one being reassembled.
func (e *engine) queued() (int, int) {
	n, b := len(e.queue), e.qbytes
	if e.asmActive {
		n++
		b += len(e.asm.payload)
	}
	return n, b
}

// handle applies one received frame. body aliases the receive slot: it is
// copied before handle returns, never kept.
func (e *engine) handle(h *header, body []byte) (event, error) {
	switch e.stage {
	case stageHandshake:
		if h.typ != frameHandshake || len(body) > handshake.MaxMessageSize || h.seq != 0 || h.ack != 0 {
			return evNone, fmt.Errorf("%w: frame type %d during the handshake", rdma.ErrProtocol, h.typ)
		}
		e.hs = append(e.hs[:0], body...)
		if !e.serverRole {
			// The listener's OK ends the handshake: its setup follows at once.
			if res, err := handshake.Decode(e.hs); err == nil && res.Type == handshake.TypeResult && res.Code == handshake.CodeOK {
				e.stage = stageSetup
			}
		}
		return evHandshake, nil
	case stageSetup:
		if h.typ != frameSetup || len(body) != 0 {
			return evNone, fmt.Errorf("%w: frame type %d instead of the setup", rdma.ErrProtocol, h.typ)
		}
		msgs, bytes := unpackWindow(h.size)
		if h.addr < minSlotSize || h.addr > maxSlotSize || msgs < 1 || msgs > maxWindowMsgs || bytes < minWindowBytes || bytes > maxWindowBytes {
			return evNone, fmt.Errorf("%w: setup with %d-byte slots and a window of %d messages, %d bytes", rdma.ErrProtocol, h.addr, msgs, bytes)
		}
		e.peerSlot, e.peerWinMsgs, e.peerWinBytes = int(h.addr), msgs, bytes
		e.stage = stageOpen
		return evSetup, nil
	case stageClosed:
		return evNone, fmt.Errorf("%w: frame type %d after the close", rdma.ErrProtocol, h.typ)
	}
	ev := evNone
	if h.ack < e.peerAck || h.ack > e.sentSeq {
		return evNone, fmt.Errorf("%w: acknowledgement %d outside [%d, %d]", rdma.ErrProtocol, h.ack, e.peerAck, e.sentSeq)
	}
	if h.ack > e.peerAck {
		e.peerAck = h.ack
		ev = evAcked
	}
	switch h.typ {
	case frameData:
		return e.data(h, body, ev)
	case frameAck:
		if h.seq != 0 || h.length != 0 {
			return evNone, fmt.Errorf("%w: malformed acknowledgement", rdma.ErrProtocol)
		}
		return ev, nil
	case frameAckReq:
		if h.seq > e.lastSeq || h.length != 0 {
			return evNone, fmt.Errorf("%w: acknowledgement requested for %d, received up to %d", rdma.ErrProtocol, h.seq, e.lastSeq)
		}
		if h.seq > e.ackWant {
			e.ackWant = h.seq
		}
		return ev | evAckReq, nil
	case frameRegionAdd:
		key := rdma.RegionKey(h.total)
		if _, dup := e.remote[key]; dup || key == 0 || len(e.remote) >= maxRegions || h.size == 0 || h.size > rdma.MaxRegionSize || h.length != 0 || h.addr+h.size < h.addr {
			return evNone, fmt.Errorf("%w: region %d of %d bytes at %#x", rdma.ErrProtocol, key, h.size, h.addr)
		}
		e.remote[key] = remoteRegion{addr: h.addr, rkey: h.rkey, size: h.size}
		return ev | evRegion, nil
	case frameRegionDel:
		key := rdma.RegionKey(h.total)
		if _, ok := e.remote[key]; !ok || h.length != 0 {
			return evNone, fmt.Errorf("%w: unknown region %d deleted", rdma.ErrProtocol, key)
		}
		delete(e.remote, key)
		return ev | evRegion, nil
	case frameClose:
		if h.length != 0 {
			return evNone, fmt.Errorf("%w: malformed close", rdma.ErrProtocol)
		}
		e.stage = stageClosed
		return ev | evClose, nil
	default:
		return evNone, fmt.Errorf("%w: frame type %d after the setup", rdma.ErrProtocol, h.typ)
	}
}

// data reassembles a message fragment.
func (e *engine) data(h *header, body []byte, ev event) (event, error) {
	first := h.frag&fragFirst != 0
	if h.frag&^(fragFirst|fragLast) != 0 || first == e.asmActive {
		return evNone, fmt.Errorf("%w: fragment of message %d out of place", rdma.ErrProtocol, h.seq)
	}
	if first {
		if h.seq <= e.lastSeq || h.total > rdma.MaxPayloadSize || h.hdrLen > rdma.MaxHeaderSize || h.flags&^rdma.KnownFlags != 0 {
			return evNone, fmt.Errorf("%w: message %d (after %d) of %d bytes, header %d, flags %#x", rdma.ErrProtocol, h.seq, e.lastSeq, h.total, h.hdrLen, uint8(h.flags))
		}
		n, b := e.queued()
		if n >= e.winMsgs || (n > 0 && b+int(h.total) > e.winBytes) {
			return evNone, fmt.Errorf("%w: message beyond the window (%d messages, %d bytes queued)", rdma.ErrProtocol, n, b)
		}
		e.lastSeq = h.seq
		e.asm = rxMsg{seq: h.seq, flags: h.flags, hdrLen: h.hdrLen, payload: make([]byte, h.total)}
		copy(e.asm.hdr[:], body[:h.hdrLen])
		e.asmActive, e.asmGot = true, 0
		body = body[h.hdrLen:]
	} else if h.seq != e.asm.seq || h.total != uint32(len(e.asm.payload)) || h.flags != 0 || h.hdrLen != 0 {
		return evNone, fmt.Errorf("%w: continuation of message %d does not match", rdma.ErrProtocol, e.asm.seq)
	}
	if len(body) > len(e.asm.payload)-e.asmGot {
		return evNone, fmt.Errorf("%w: fragment of %d bytes with %d left", rdma.ErrProtocol, len(body), len(e.asm.payload)-e.asmGot)
	}
	e.asmGot += copy(e.asm.payload[e.asmGot:], body)
	last := e.asmGot == len(e.asm.payload)
	if last != (h.frag&fragLast != 0) {
		return evNone, fmt.Errorf("%w: message %d ends at the wrong fragment", rdma.ErrProtocol, e.asm.seq)
	}
	if !last {
		return ev, nil
	}
	e.queue = append(e.queue, e.asm)
	e.qbytes += len(e.asm.payload)
	e.asm, e.asmActive = rxMsg{}, false
	return ev | evMessage, nil
}

// pop takes the oldest queued message into m.
func (e *engine) pop(m *rdma.Message) bool {
	if len(e.queue) == 0 {
		return false
	}
	q := &e.queue[0]
	copy(m.Prepare(q.seq, q.flags, q.hdr[:q.hdrLen], len(q.payload)), q.payload)
	e.delivered = q.seq
	e.qbytes -= len(q.payload)
	e.queue[0] = rxMsg{}
	e.queue = e.queue[1:]
	return true
}

// drop forgets everything the peer sent that was not delivered.
func (e *engine) drop() {
	e.queue, e.qbytes = nil, 0
	e.asm, e.asmActive = rxMsg{}, false
}
