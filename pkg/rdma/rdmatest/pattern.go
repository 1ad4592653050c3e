package rdmatest

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Pattern returns n bytes that depend on seed and on each byte's position,
// so that a misplaced, truncated or corrupted payload is detected.
func Pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	FillPattern(b, seed)
	return b
}

// FillPattern fills b with the pattern of Pattern.
func FillPattern(b []byte, seed uint64) {
	const block = 251 // prime, so that the pattern does not align with powers of two
	var unit [block + 8]byte
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range unit {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		unit[i] = byte(x)
	}
	for off := 0; off < len(b); off += block {
		copy(b[off:], unit[:block])
		b[off] ^= byte(off / block) // make consecutive blocks differ
	}
}

// CheckPattern reports whether b is FillPattern's output for seed.
func CheckPattern(b []byte, seed uint64) error {
	want := Pattern(seed, len(b))
	if !bytes.Equal(b, want) {
		i := 0
		for i < len(b) && b[i] == want[i] {
			i++
		}
		return fmt.Errorf("payload of %d bytes differs from pattern %d at byte %d", len(b), seed, i)
	}
	return nil
}

// header encodes the test's message identity: a stream (sender) number, an
// index within the stream, and the pattern seed of the payload.
func header(stream, index uint32, seed uint64, n int) []byte {
	h := make([]byte, 16, max(16, n))
	binary.LittleEndian.PutUint32(h[0:], stream)
	binary.LittleEndian.PutUint32(h[4:], index)
	binary.LittleEndian.PutUint64(h[8:], seed)
	for len(h) < n {
		h = append(h, byte(len(h)))
	}
	return h
}

func parseHeader(h []byte) (stream, index uint32, seed uint64, err error) {
	if len(h) < 16 {
		return 0, 0, 0, fmt.Errorf("test header of %d bytes", len(h))
	}
	return binary.LittleEndian.Uint32(h[0:]), binary.LittleEndian.Uint32(h[4:]), binary.LittleEndian.Uint64(h[8:]), nil
}
