package call

import (
	"context"
	"errors"
	"unsafe"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// Request is a message as a handler gets it. Its slices are valid until the
// handler returns.
type Request struct {
	// ConnID is the connection the message came on.
	ConnID string
	// Header and Payload are the application's.
	Header, Payload []byte
	// Retry is set on a message sent again after its channel changed: the
	// handler may have seen it before.
	Retry bool
	// OneWay is set for a message sent with Caller.Send: its answer is
	// dropped.
	OneWay bool
}

// Handler handles one message; for a call, its result is the answer, and an
// error is answered as a RemoteError with its text.
type Handler func(ctx context.Context, req *Request) (reply []byte, err error)

// Serve runs h for every message of ch, in order, until ch or ctx ends,
// answering calls on ch. A handler that fails once ctx has ended gets no
// answer: its caller sends the call again on its next channel. Messages that are not calls or sends are dropped
// and logged at debug level: a peer cannot make Serve fail.
func Serve(ctx context.Context, ch rdma.Channel, h Handler, log *logrus.Entry) error {
	// Messages are received into in[i]. An answer may be the request's own
	// payload (an echo), which the channel may read from until the peer
	// acknowledges it: after an echo, the next message goes to the next
	// buffer, which is given up first if the answer it carries is still
	// unacknowledged. In a ping-pong it never is: the peer took that
	// answer before it sent a later message. The channel is asked only
	// when what it said last does not cover that answer; with the buffers
	// taken in turn, one Acked covers the next ones too (on shm, the call
	// just received carries the peer's consumer position). Only handlers
	// that echo use more than one buffer.
	var (
		in     [4]rdma.Message
		echoed [4]uint64 // the sequence number of the answer in in[i]'s buffer, or 0
		acked  uint64    // what ch.Acked returned last
		out    rdma.Message
		hdr    [prefixSize]byte
	)
	req := Request{ConnID: ch.ConnID()}
	for i := 0; ; {
		if echoed[i] != 0 {
			i = (i + 1) % len(in)
			if seq := echoed[i]; seq != 0 {
				if acked < seq {
					acked = ch.Acked()
				}
				if acked < seq {
					in[i].Detach()
				}
				echoed[i] = 0
			}
		}
		m := &in[i]
		if err := ch.Recv(ctx, m); err != nil {
			return err
		}
		kind, id, header, err := decode(m.Header)
		if err != nil || (kind != KindCall && kind != KindSend) {
			log.WithField("conn_id", ch.ConnID()).Debug("call: dropped a message that is not a call or a send")
			continue
		}
		req.Header, req.Payload, req.Retry, req.OneWay = header, m.Payload, m.Retry(), kind == KindSend
		reply, herr := h(ctx, &req)
		if herr != nil && ctx.Err() != nil {
			// Stopped under the handler, which gave up: no answer, so that
			// the caller sends the call again wherever its connection goes
			// next. (An answer the handler finished goes out.)
			return ctx.Err()
		}
		if kind == KindSend {
			continue
		}
		out.Payload, out.Flags = reply, 0
		answer := KindReply
		if herr != nil {
			answer, out.Payload = KindError, []byte(herr.Error())
		}
		out.Header = encode(hdr[:], answer, id, nil)
		seq, err := ch.Send(ctx, &out)
		if err != nil {
			return err
		}
		if overlaps(out.Payload, m.Payload[:cap(m.Payload)]) {
			echoed[i] = seq
		}
	}
}

// overlaps reports whether a and b share memory. Only addresses are
// compared; nothing is dereferenced.
func overlaps(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0 := uintptr(unsafe.Pointer(unsafe.SliceData(a))) //nolint:gosec // G103: address comparison only
	b0 := uintptr(unsafe.Pointer(unsafe.SliceData(b))) //nolint:gosec // G103: address comparison only
	return a0 < b0+uintptr(len(b)) && b0 < a0+uintptr(len(a))
}

// RemoteError is a call's failure as its handler reported it.
type RemoteError struct {
	Message string
}

func (e *RemoteError) Error() string { return "call: the handler failed: " + e.Message }

// IsRemote reports whether err is a handler's failure rather than a failure
// to deliver the call.
func IsRemote(err error) bool {
	var re *RemoteError
	return errors.As(err, &re)
}
