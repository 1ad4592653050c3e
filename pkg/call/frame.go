package call

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// Kind says what a message is.
type Kind uint8

// The kinds of message.
const (
	KindSend  Kind = 1 // one-way message, no answer
	KindCall  Kind = 2 // a call that waits for its answer
	KindReply Kind = 3 // the answer to a call
	KindError Kind = 4 // the answer to a call whose handler failed; the payload is the error text
)

// prefixSize is the kind byte and the 8-byte correlation ID.
const prefixSize = 9

// MaxHeaderSize is the largest application header a message carries.
const MaxHeaderSize = rdma.MaxHeaderSize - prefixSize

// errMalformed reports a header that is not one of ours.
var errMalformed = errors.New("call: malformed message header")

// checkHeader refuses an application header too large to carry.
func checkHeader(header []byte) error {
	if len(header) > MaxHeaderSize {
		return fmt.Errorf("call: header of %d bytes, more than %d", len(header), MaxHeaderSize)
	}
	return nil
}

// encode writes the rdma header of a message, for an application header
// that checkHeader accepts, into dst's memory if it has room (the hot
// paths give it the room) and returns it.
func encode(dst []byte, kind Kind, id uint64, header []byte) []byte {
	n := prefixSize + len(header)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	dst[0] = byte(kind)
	binary.BigEndian.PutUint64(dst[1:prefixSize], id)
	copy(dst[prefixSize:], header)
	return dst
}

// decode reads the rdma header of a received message. The application
// header aliases h.
func decode(h []byte) (kind Kind, id uint64, header []byte, err error) {
	if len(h) < prefixSize {
		return 0, 0, nil, errMalformed
	}
	kind = Kind(h[0])
	if kind < KindSend || kind > KindError {
		return 0, 0, nil, errMalformed
	}
	id = binary.BigEndian.Uint64(h[1:prefixSize])
	if kind != KindSend && id == 0 {
		return 0, 0, nil, errMalformed
	}
	return kind, id, h[prefixSize:], nil
}
