package call

import (
	"context"
	"errors"

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
// answering calls on ch. Messages that are not calls or sends are dropped
// and logged at debug level: a peer cannot make Serve fail.
func Serve(ctx context.Context, ch rdma.Channel, h Handler, log *logrus.Entry) error {
	var in, out rdma.Message
	hdr := make([]byte, 0, prefixSize)
	req := Request{ConnID: ch.ConnID()}
	for {
		if err := ch.Recv(ctx, &in); err != nil {
			return err
		}
		kind, id, header, err := decode(in.Header)
		if err != nil || (kind != KindCall && kind != KindSend) {
			log.WithField("conn_id", ch.ConnID()).Debug("call: dropped a message that is not a call or a send")
			continue
		}
		req.Header, req.Payload, req.Retry, req.OneWay = header, in.Payload, in.Retry(), kind == KindSend
		reply, herr := h(ctx, &req)
		if ctx.Err() != nil {
			// Stopped under the handler: no answer, so that the caller sends
			// the call again wherever its connection goes next.
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
		if hdr, err = encode(hdr, answer, id, nil); err != nil {
			return err
		}
		out.Header = hdr
		if _, err := ch.Send(ctx, &out); err != nil {
			return err
		}
		// The answer may be the request's own payload (an echo), which the
		// channel may read from until the peer takes it: the next Recv must
		// not write over it.
		in.Payload = reply
		in.Detach()
	}
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
