package shm

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// Shared memory layout. The region starts with one page naming the layout,
// followed by two rings (dialer to listener, then listener to dialer). A
// ring is a control page, its descriptors and its data area:
//
//	control page: head (u64, consumer) at 128, consumer-sleeps flag (u32)
//	              at 256, producer-sleeps flag (u32) at 384: each on a
//	              cache line of its own
//	descriptors:  slots × 128 bytes
//	data area:    dataSize bytes
//
// There is no shared tail: each descriptor starts with its publication
// number, written last (atomically) by the producer, so the consumer polls
// the slot it wants next and reads the message in the same cache lines. A
// descriptor is 40 bytes of fields (little endian) and 88 inline bytes:
//
//	0  pub     u64  1 + the slot's position in the ring's history: the slot
//	                at head is published when pub == head+1
//	8  seq     u64  message sequence number
//	16 total   u32  message payload length
//	20 len     u32  this fragment's payload length
//	24 off     u32  data area offset of the fragment (0 when inline)
//	28 frag    u8   fragFirst | fragLast | fragInline
//	29 flags   u8   rdma.Flags (first fragment)
//	30 hdrLen  u8   application header length (first fragment)
//	31 zero    u8
//	32 ack     u64  the producer's head as consumer of the other ring when it
//	                wrote the slot: an acknowledgement riding on the message,
//	                so that the other side learns what was consumed without
//	                reading the cache line the consumer keeps writing
//	40 inline  88 bytes: the application header, then (fragInline) the payload
const (
	pageSize   = 4096
	ctrlSize   = pageSize
	descSize   = 128
	descFields = 40
	inlineSize = descSize - descFields

	offAck       = 32 // in a descriptor
	offHead      = 128
	offConsSleep = 256
	offProdSleep = 384

	fragFirst  = 1
	fragLast   = 2
	fragInline = 4

	// Bounds of a layout a peer may propose.
	minSlots    = 16
	maxSlots    = 1 << 16
	minDataSize = 64 << 10
	maxDataSize = 256 << 20
)

var layoutMagic = [8]byte{'T', 'T', 'S', 'H', 'M', '0', '0', '2'}

// layout is the geometry of the rings.
type layout struct {
	slots    uint64
	dataSize uint64
}

func (l layout) validate() error {
	if l.slots < minSlots || l.slots > maxSlots || l.slots&(l.slots-1) != 0 {
		return fmt.Errorf("%w: %d ring slots (a power of two from %d to %d)", rdma.ErrProtocol, l.slots, minSlots, maxSlots)
	}
	if l.dataSize < minDataSize || l.dataSize > maxDataSize || l.dataSize%pageSize != 0 {
		return fmt.Errorf("%w: ring data of %d bytes (pages from %d to %d)", rdma.ErrProtocol, l.dataSize, minDataSize, maxDataSize)
	}
	return nil
}

func (l layout) ringSize() uint64 { return ctrlSize + l.slots*descSize + l.dataSize }

func (l layout) totalSize() uint64 { return pageSize + 2*l.ringSize() }

// fragMax is the largest fragment of the data area: an eighth of it, so
// that several are in flight and the two copies overlap.
func (l layout) fragMax() int { return int(min(l.dataSize/8, 256<<10)) }

// writeHeader names the layout in the region's first page.
func (l layout) writeHeader(mem []byte) {
	copy(mem, layoutMagic[:])
	binary.LittleEndian.PutUint64(mem[8:], l.slots)
	binary.LittleEndian.PutUint64(mem[16:], l.dataSize)
}

// checkHeader verifies that the region's first page names layout l.
func (l layout) checkHeader(mem []byte) error {
	if [8]byte(mem[:8]) != layoutMagic || binary.LittleEndian.Uint64(mem[8:]) != l.slots || binary.LittleEndian.Uint64(mem[16:]) != l.dataSize {
		return fmt.Errorf("%w: the region's header does not match its layout", rdma.ErrProtocol)
	}
	return nil
}

// ring is a view of one ring in a mapping.
type ring struct {
	head                 *uint64
	consSleep, prodSleep *uint32
	desc                 []byte
	data                 []byte
	slots, mask          uint64
	dataSize             uint64
}

// ringAt returns the view of ring dir (0: dialer to listener, 1: back) in mem.
func ringAt(mem []byte, l layout, dir int) *ring {
	base := pageSize + uint64(dir)*l.ringSize()
	r := mem[base : base+l.ringSize()]
	// The counters are shared with the other process and accessed only
	// atomically; the offsets are constant, aligned and inside the mapping.
	return &ring{
		head:      (*uint64)(unsafe.Pointer(&r[offHead])),      //nolint:gosec // G103: shared-memory counter, see above
		consSleep: (*uint32)(unsafe.Pointer(&r[offConsSleep])), //nolint:gosec // G103: shared-memory flag, see above
		prodSleep: (*uint32)(unsafe.Pointer(&r[offProdSleep])), //nolint:gosec // G103: shared-memory flag, see above
		desc:      r[ctrlSize : ctrlSize+l.slots*descSize],
		data:      r[ctrlSize+l.slots*descSize:],
		slots:     l.slots,
		mask:      l.slots - 1,
		dataSize:  l.dataSize,
	}
}

// pub returns the publication number of the slot for position i.
func (r *ring) pub(i uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.desc[(i&r.mask)*descSize])) //nolint:gosec // G103: shared-memory counter in the slot
}

// lastAck returns the acknowledgement (desc.ack) of the last slot the
// consumer took, unchecked, or 0 before the first: a word of a cache line
// the consumer has just read, which the producer rewrites only when the
// ring comes round to that slot again (and then with a later one).
func (r *ring) lastAck() uint64 {
	h := atomic.LoadUint64(r.head)
	if h == 0 {
		return 0
	}
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&r.desc[((h-1)&r.mask)*descSize+offAck]))) //nolint:gosec // G103: shared-memory word in the slot
}

// desc is a descriptor's fields (but the publication number).
type desc struct {
	seq    uint64
	total  uint32
	length uint32
	off    uint32
	frag   uint8
	flags  rdma.Flags
	hdrLen uint8
	ack    uint64
}

// encode writes the fields after the publication number.
func (d *desc) encode(b []byte) {
	binary.LittleEndian.PutUint64(b[8:], d.seq)
	binary.LittleEndian.PutUint32(b[16:], d.total)
	binary.LittleEndian.PutUint32(b[20:], d.length)
	binary.LittleEndian.PutUint32(b[24:], d.off)
	b[28], b[29], b[30], b[31] = d.frag, byte(d.flags), d.hdrLen, 0
	binary.LittleEndian.PutUint64(b[offAck:], d.ack)
}

func decodeDesc(b *[descFields]byte) desc {
	return desc{
		seq:    binary.LittleEndian.Uint64(b[8:]),
		total:  binary.LittleEndian.Uint32(b[16:]),
		length: binary.LittleEndian.Uint32(b[20:]),
		off:    binary.LittleEndian.Uint32(b[24:]),
		frag:   b[28],
		flags:  rdma.Flags(b[29]),
		hdrLen: b[30],
		ack:    binary.LittleEndian.Uint64(b[offAck:]),
	}
}

// producer is the writing side of a ring; its fields are private to the
// producer, never read back from shared memory except the consumer's head.
type producer struct {
	r        *ring
	tail     uint64   // slots published
	head     uint64   // the consumer's head, as last read and checked
	dataTail uint64   // bytes of the data area allocated, ever
	dataHead uint64   // bytes of the data area freed, ever
	slotEnd  []uint64 // dataTail after each slot was allocated
}

func newProducer(r *ring) *producer {
	return &producer{r: r, slotEnd: make([]uint64, r.slots)}
}

// refresh reads the consumer's head and checks it: it never moves back and
// never passes the tail.
func (p *producer) refresh() error {
	h := atomic.LoadUint64(p.r.head)
	if h < p.head || h > p.tail {
		return fmt.Errorf("%w: consumer head %d outside [%d, %d]", rdma.ErrProtocol, h, p.head, p.tail)
	}
	if h > p.head {
		p.head = h
		p.dataHead = p.slotEnd[(h-1)&p.r.mask]
	}
	return nil
}

// room reports whether a fragment with n bytes in the data area (0 for an
// inline one) fits now.
func (p *producer) room(n int) bool {
	if p.tail-p.head >= p.r.slots {
		return false
	}
	if n == 0 {
		return true
	}
	need := uint64(n)
	if pos := p.dataTail % p.r.dataSize; pos+need > p.r.dataSize {
		need += p.r.dataSize - pos // the fragment starts at the beginning
	}
	return p.dataTail+need-p.dataHead <= p.r.dataSize
}

// put writes one fragment (room must hold) and publishes it. hdr goes
// inline in a first fragment; payload goes inline when d.frag has
// fragInline, in the data area otherwise.
func (p *producer) put(d *desc, hdr, payload []byte) {
	slot := p.r.desc[(p.tail&p.r.mask)*descSize:][:descSize]
	inline := slot[descFields:]
	copy(inline, hdr)
	d.length = uint32(len(payload))
	d.off = 0
	if d.frag&fragInline != 0 {
		copy(inline[len(hdr):], payload)
	} else if len(payload) > 0 {
		pos := p.dataTail % p.r.dataSize
		if pos+uint64(len(payload)) > p.r.dataSize {
			p.dataTail += p.r.dataSize - pos
			pos = 0
		}
		copy(p.r.data[pos:], payload)
		d.off = uint32(pos)
		p.dataTail += uint64(len(payload))
	}
	d.encode(slot)
	p.slotEnd[p.tail&p.r.mask] = p.dataTail
	p.tail++
	atomic.StoreUint64(p.r.pub(p.tail-1), p.tail) // the slot is published
}

// consumer is the reading side of a ring.
type consumer struct {
	r       *ring
	head    uint64 // slots consumed
	lastSeq uint64
	// the message being reassembled
	inMsg bool
	seq   uint64
	total uint32
	got   uint32
}

// available reports whether the next slot is published. A producer that
// writes anything else there only stalls its own channel.
func (c *consumer) available() bool {
	return atomic.LoadUint64(c.r.pub(c.head)) == c.head+1
}

// take consumes the next fragment (available must have said so) into m,
// checking every field before it touches memory. It reports whether m now
// holds a complete message.
func (c *consumer) take(m *rdma.Message) (bool, error) {
	slot := c.r.desc[(c.head&c.r.mask)*descSize:][:descSize]
	var fields [descFields]byte
	copy(fields[:], slot) // read the fields once: the peer may change them meanwhile
	if binary.LittleEndian.Uint64(fields[:]) != c.head+1 {
		return false, fmt.Errorf("%w: slot %d republished while read", rdma.ErrProtocol, c.head)
	}
	d := decodeDesc(&fields)
	inline := slot[descFields:]
	first := d.frag&fragFirst != 0
	switch {
	case d.frag&^(fragFirst|fragLast|fragInline) != 0:
		return false, fmt.Errorf("%w: descriptor fragment bits %#x", rdma.ErrProtocol, d.frag)
	case first == c.inMsg:
		return false, fmt.Errorf("%w: fragment of message %d out of place", rdma.ErrProtocol, d.seq)
	case first && (d.seq <= c.lastSeq || d.total > rdma.MaxPayloadSize || d.hdrLen > rdma.MaxHeaderSize || d.flags&^rdma.KnownFlags != 0):
		return false, fmt.Errorf("%w: message %d (after %d) of %d bytes, header %d, flags %#x", rdma.ErrProtocol, d.seq, c.lastSeq, d.total, d.hdrLen, uint8(d.flags))
	case !first && (d.seq != c.seq || d.total != c.total || d.hdrLen != 0 || d.flags != 0):
		return false, fmt.Errorf("%w: continuation of message %d does not match", rdma.ErrProtocol, c.seq)
	}
	if first {
		c.inMsg, c.seq, c.total, c.got = true, d.seq, d.total, 0
	}
	if d.length > c.total-c.got {
		return false, fmt.Errorf("%w: fragment of %d bytes with %d left", rdma.ErrProtocol, d.length, c.total-c.got)
	}
	last := c.got+d.length == c.total
	if last != (d.frag&fragLast != 0) {
		return false, fmt.Errorf("%w: message %d ends at the wrong fragment", rdma.ErrProtocol, d.seq)
	}
	var src []byte
	if d.frag&fragInline != 0 {
		if int(d.hdrLen)+int(d.length) > inlineSize || d.off != 0 {
			return false, fmt.Errorf("%w: inline fragment of %d bytes", rdma.ErrProtocol, d.length)
		}
		src = inline[d.hdrLen : int(d.hdrLen)+int(d.length)]
	} else {
		if uint64(d.off)+uint64(d.length) > c.r.dataSize {
			return false, fmt.Errorf("%w: fragment of %d bytes at %d outside the data area", rdma.ErrProtocol, d.length, d.off)
		}
		src = c.r.data[d.off : uint64(d.off)+uint64(d.length)]
	}
	if first {
		m.Prepare(d.seq, d.flags, inline[:d.hdrLen], int(d.total))
	}
	copy(m.Payload[c.got:], src)
	c.got += d.length
	c.head++
	atomic.StoreUint64(c.r.head, c.head)
	if last {
		c.inMsg = false
		c.lastSeq = c.seq
	}
	return last, nil
}

// pending estimates the fragments published and not consumed, and their
// payload bytes, from shared memory (for statistics only; bounded by the
// ring's size whatever the peer wrote).
func (c *consumer) pending() (fragments, bytes int) {
	var total uint64
	n := uint64(0)
	for ; n < c.r.slots && atomic.LoadUint64(c.r.pub(c.head+n)) == c.head+n+1; n++ {
		slot := c.r.desc[((c.head+n)&c.r.mask)*descSize:]
		total += min(uint64(binary.LittleEndian.Uint32(slot[20:])), c.r.dataSize)
	}
	return int(n), int(min(total, c.r.dataSize+n*inlineSize))
}
