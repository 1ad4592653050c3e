package core

import (
	"github.com/tether-mesh/tether/pkg/rdma"
)

// Entry is one sent, unacknowledged message.
type Entry struct {
	Seq     uint64
	Flags   rdma.Flags
	HdrLen  uint8
	Hdr     [rdma.MaxHeaderSize]byte
	Payload []byte
	// Aux is for the provider (for example the last ring slot the message
	// occupies).
	Aux uint64
}

// Retention keeps the messages a sender has not seen acknowledged, in
// sequence order, in a ring of bounded capacity (the window). The ring
// starts small and doubles up to the capacity when a push finds it full,
// so that a channel that never has many messages in flight (most: a
// connection's setup allocated the whole window, 57 KiB on shm, for
// nothing) does not pay for the window; once grown, it pushes without
// allocating. The header is copied; the payload is referred to (Messages
// copies both).
type Retention struct {
	ring  []Entry
	max   int
	head  int
	n     int
	bytes int
}

// initialRetention is the ring a Retention starts with.
const initialRetention = 16

// NewRetention returns a Retention holding at most capacity messages.
func NewRetention(capacity int) *Retention {
	return &Retention{ring: make([]Entry, min(capacity, initialRetention)), max: capacity}
}

// Len is the number of messages held.
func (r *Retention) Len() int { return r.n }

// Bytes is the number of payload bytes held.
func (r *Retention) Bytes() int { return r.bytes }

// Cap is the capacity.
func (r *Retention) Cap() int { return r.max }

// Full reports whether no more message fits.
func (r *Retention) Full() bool { return r.n >= r.max }

// Push records m, sent with sequence number seq. The caller checks Full first.
func (r *Retention) Push(m *rdma.Message, seq, aux uint64) {
	if r.n == len(r.ring) {
		r.grow()
	}
	e := &r.ring[(r.head+r.n)%len(r.ring)]
	e.Seq = seq
	e.Flags = m.Flags
	e.HdrLen = uint8(copy(e.Hdr[:], m.Header))
	e.Payload = m.Payload
	e.Aux = aux
	r.n++
	r.bytes += len(m.Payload)
}

// grow doubles the ring, at most to the capacity, keeping the messages in
// order from its start.
func (r *Retention) grow() {
	ring := make([]Entry, min(max(2*len(r.ring), 1), r.max))
	for i := range r.n {
		ring[i] = r.ring[(r.head+i)%len(r.ring)]
	}
	r.ring, r.head = ring, 0
}

// Front returns the oldest message, or nil.
func (r *Retention) Front() *Entry {
	if r.n == 0 {
		return nil
	}
	return &r.ring[r.head]
}

// Back returns the newest message, or nil.
func (r *Retention) Back() *Entry {
	if r.n == 0 {
		return nil
	}
	return &r.ring[(r.head+r.n-1)%len(r.ring)]
}

// Pop drops the oldest message.
func (r *Retention) Pop() {
	e := &r.ring[r.head]
	r.bytes -= len(e.Payload)
	e.Payload = nil
	r.head = (r.head + 1) % len(r.ring)
	r.n--
}

// AckUpTo drops every message with a sequence number up to seq and returns
// how many it dropped.
func (r *Retention) AckUpTo(seq uint64) int {
	k := 0
	for r.n > 0 && r.ring[r.head].Seq <= seq {
		r.Pop()
		k++
	}
	return k
}

// Messages returns copies of the held messages, headers and payloads
// included, which the caller owns: the senders may reuse their payloads as
// soon as the messages are acknowledged. All the bytes are in one
// allocation; each message's slices are capped at their length, so that
// appending to one does not overwrite the next.
func (r *Retention) Messages() []rdma.Message {
	out := make([]rdma.Message, r.n)
	total := 0
	for i := range r.n {
		e := &r.ring[(r.head+i)%len(r.ring)]
		total += int(e.HdrLen) + len(e.Payload)
	}
	buf := make([]byte, total)
	for i := range out {
		e := &r.ring[(r.head+i)%len(r.ring)]
		out[i] = rdma.Message{Seq: e.Seq, Flags: e.Flags}
		out[i].Header, buf = take(buf, e.Hdr[:e.HdrLen])
		out[i].Payload, buf = take(buf, e.Payload)
	}
	return out
}

// take copies b into the front of buf and returns the copy (nil for an
// empty b) and the rest of buf.
func take(buf, b []byte) (dst, rest []byte) {
	if len(b) == 0 {
		return nil, buf
	}
	n := copy(buf, b)
	return buf[:n:n], buf[n:]
}

// Each calls f for every held message, oldest first.
func (r *Retention) Each(f func(*Entry)) {
	for i := range r.n {
		f(&r.ring[(r.head+i)%len(r.ring)])
	}
}
