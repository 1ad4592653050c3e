package rdma

import (
	"fmt"
	"unsafe"
)

// Size limits of a message.
const (
	// MaxHeaderSize is the largest application header a message can carry.
	MaxHeaderSize = 64
	// MaxPayloadSize is the largest payload a message (or a one-sided write)
	// can carry: 16 MiB.
	MaxPayloadSize = 16 << 20
	// MaxConnIDSize is the longest connection ID, in bytes.
	MaxConnIDSize = 255
)

// Flags qualify a message.
type Flags uint8

const (
	// FlagRetry marks a message that the sender replays after a failure (for
	// example on a new channel after heal), so that the receiver can
	// deduplicate it.
	FlagRetry Flags = 1 << 0

	// KnownFlags is the set of flags a peer may send; any other bit is a
	// protocol violation.
	KnownFlags = FlagRetry
)

// Message is one ordered, reliable message: an application header and a
// payload (the shape of a GCS message), with its sequence number and flags.
//
// For Send, set Flags, Header and Payload; Send sets Seq. For Recv, pass a
// Message to reuse: Recv sets every exported field, storing the header and
// the payload in buffers owned by the Message, which it reuses from one Recv
// to the next (so a steady stream of receives does not allocate). Those
// slices stay valid until the next Recv into the same Message. Recv never
// writes into slices that the caller itself put into Header or Payload,
// only into its own buffers and one the caller lent it (Lend).
type Message struct {
	// Seq is the message's sequence number on its channel.
	Seq uint64
	// Flags qualify the message (FlagRetry).
	Flags Flags
	// Header is the application header, at most MaxHeaderSize bytes.
	Header []byte
	// Payload is the message body, at most MaxPayloadSize bytes.
	Payload []byte

	hdr  [MaxHeaderSize]byte
	buf  []byte
	lent []byte // Lend's buffer, or nil
}

// Lend has the Recvs into m store a payload that fits in cap(buf) in buf's
// memory, from its start, rather than in m's own buffer, until Lend is
// called again (Lend(nil) ends it): a receiver that wants the payload in a
// buffer of its own (an append to its reply buffer, say) saves a copy.
// Receiving into m writes into that memory, even a message the receiver
// then passes over, so buf must be free for it until the end.
func (m *Message) Lend(buf []byte) { m.lent = buf }

// Retry reports whether the message carries FlagRetry.
func (m *Message) Retry() bool { return m.Flags&FlagRetry != 0 }

// Validate checks the sizes and flags of a message about to be sent.
func (m *Message) Validate() error {
	if len(m.Header) > MaxHeaderSize {
		return fmt.Errorf("%w: header of %d bytes (max %d)", ErrTooLarge, len(m.Header), MaxHeaderSize)
	}
	if len(m.Payload) > MaxPayloadSize {
		return fmt.Errorf("%w: payload of %d bytes (max %d)", ErrTooLarge, len(m.Payload), MaxPayloadSize)
	}
	if m.Flags&^KnownFlags != 0 {
		return fmt.Errorf("%w: unknown message flags %#x", ErrInvalidArgument, uint8(m.Flags&^KnownFlags))
	}
	return nil
}

// Prepare readies m to receive a message: it records seq and flags, copies
// header into m's own header storage, and returns a slice of length n backed
// by the buffer lent to m if it fits (Lend), else by m's own payload buffer
// (grown when needed, reused otherwise), which it also stores in m.Payload
// for the caller to fill. Providers call it from
// Recv; n must not exceed MaxPayloadSize and header must not exceed
// MaxHeaderSize (providers validate both before calling).
func (m *Message) Prepare(seq uint64, flags Flags, header []byte, n int) []byte {
	m.Seq = seq
	m.Flags = flags
	m.Header = m.hdr[:copy(m.hdr[:], header)]
	if cap(m.lent) >= n && m.lent != nil {
		m.Payload = m.lent[:n]
		return m.Payload
	}
	if cap(m.buf) < n {
		m.buf = make([]byte, n, max(n, 2*cap(m.buf)))
	}
	m.Payload = m.buf[:n]
	return m.Payload
}

// Detach lets the caller keep m.Payload after it was filled by Recv: if
// m.Payload lies in m's own payload buffer, m gives that buffer up and the
// next Recv into m uses a new one. Send calls Detach, so that a received
// payload that is sent on (echoed, forwarded) is never overwritten by a later
// Recv into the same Message while it is unacknowledged.
func (m *Message) Detach() {
	if cap(m.buf) == 0 || cap(m.Payload) == 0 {
		return
	}
	// Only addresses are compared; nothing is dereferenced.
	start := uintptr(unsafe.Pointer(unsafe.SliceData(m.buf[:cap(m.buf)])))     //nolint:gosec // G103: address comparison only
	p := uintptr(unsafe.Pointer(unsafe.SliceData(m.Payload[:cap(m.Payload)]))) //nolint:gosec // G103: address comparison only
	if p >= start && p < start+uintptr(cap(m.buf)) {
		m.buf = nil
	}
}

// ValidateConnID checks that a connection ID is usable: 1 to MaxConnIDSize bytes.
func ValidateConnID(connID string) error {
	if len(connID) == 0 || len(connID) > MaxConnIDSize {
		return fmt.Errorf("%w: connection ID must be 1 to %d bytes, got %d", ErrInvalidArgument, MaxConnIDSize, len(connID))
	}
	return nil
}
