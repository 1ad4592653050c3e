package shm

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// FuzzRing fills a ring's descriptors (and the start of its data area)
// with anything, and publishes the first slots: the consumer checks every
// field before it touches memory, so it never panics, never reads outside
// the ring, and never builds a message larger than the maximum.
func FuzzRing(f *testing.F) {
	lay := layout{slots: minSlots, dataSize: minDataSize}
	good := func(descs ...desc) []byte {
		b := make([]byte, len(descs)*descSize)
		for i := range descs {
			descs[i].encode(b[i*descSize:])
		}
		return b
	}
	f.Add(good(desc{seq: 1, total: 5, length: 5, frag: fragFirst | fragLast | fragInline}), uint64(1))
	f.Add(good(desc{seq: 1, total: 300, length: 200, frag: fragFirst}, desc{seq: 1, total: 300, length: 100, off: 200, frag: fragLast}), uint64(2))
	f.Add(good(desc{seq: 3, total: 1, length: 1, off: minDataSize - 1, frag: fragFirst | fragLast, hdrLen: 64, flags: rdma.FlagRetry}), uint64(1))
	f.Add(good(desc{seq: 1, total: rdma.MaxPayloadSize, length: minDataSize, frag: fragFirst}), uint64(1))
	f.Add(good(desc{seq: 2, total: 1, length: 1, frag: fragFirst | fragLast | fragInline}, desc{seq: 1, total: 1, length: 1, frag: fragFirst | fragLast | fragInline}), uint64(2))
	f.Add([]byte{}, uint64(1<<63))
	mem := make([]byte, lay.totalSize())
	var m rdma.Message // reused: a message of the maximum size is allocated once
	f.Fuzz(func(t *testing.T, content []byte, published uint64) {
		clear(mem)
		r := ringAt(mem, lay, 0)
		copy(r.desc, content)
		if len(content) > len(r.desc) {
			copy(r.data, content[len(r.desc):])
		}
		// Publish the first slots properly, unless the content says
		// otherwise (its pub fields survive when published is 0).
		for i := range min(published, lay.slots) {
			atomic.StoreUint64(r.pub(i), i+1)
		}
		c := &consumer{r: r}
		for range 64 {
			if !c.available() {
				return
			}
			done, err := c.take(&m)
			if err != nil {
				return
			}
			if len(m.Payload) > rdma.MaxPayloadSize || len(m.Header) > rdma.MaxHeaderSize {
				t.Fatalf("message of %d+%d bytes", len(m.Header), len(m.Payload))
			}
			if done && m.Seq == 0 {
				t.Fatal("a message with sequence number 0")
			}
		}
	})
}

// FuzzControl decodes any control message with any number of descriptors.
func FuzzControl(f *testing.F) {
	for _, m := range []ctlMsg{{typ: ctlSetup, a: 512, b: 2 << 20, c: 1 << 22}, {typ: ctlRegionAdd, a: 1, b: 4096}, {typ: ctlConnected}, {typ: ctlRegionAck, a: 3}, {typ: ctlDisconnect}} {
		f.Add(m.encode(), fdsOf(m.typ))
	}
	f.Add([]byte{9, 0, 0, 0}, 0)
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		m, err := decodeCtl(b, nfds)
		if err != nil {
			return
		}
		if nfds != fdsOf(m.typ) || string(m.encode()) != string(b) {
			t.Fatalf("accepted %x with %d descriptors as %+v", b, nfds, m)
		}
	})
}

// FuzzPeerHead: whatever head the consumer publishes, the producer
// accepts only one between its last and its tail.
func FuzzPeerHead(f *testing.F) {
	f.Add(uint64(0), uint64(3), uint64(1))
	f.Add(uint64(5), uint64(3), uint64(1<<63))
	f.Fuzz(func(t *testing.T, published, tail, head uint64) {
		lay := layout{slots: minSlots, dataSize: minDataSize}
		mem := make([]byte, lay.totalSize())
		p := newProducer(ringAt(mem, lay, 1))
		p.tail = tail % (lay.slots + 1)
		p.head = min(published, p.tail)
		before := p.head
		binary.LittleEndian.PutUint64(mem[pageSize+lay.ringSize()+offHead:], head)
		err := p.refresh()
		if err == nil && (p.head < before || p.head > p.tail) {
			t.Fatalf("accepted head %d outside [%d, %d]", p.head, before, p.tail)
		}
		if err == nil && !p.room(0) && p.tail-p.head < lay.slots {
			t.Fatal("no room although slots are free")
		}
	})
}
