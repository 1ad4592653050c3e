package chain

import (
	"context"
	"errors"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrConnectionClosed is returned by a Handle whose connection was closed, or
// whose first Request failed.
var ErrConnectionClosed = errors.New("chain: connection is closed")

var errPanicked = errors.New("chain: an element panicked")

// reentrant is a chain head that can run an event for an entry it holds.
type reentrant interface {
	reRequest(ctx context.Context, e *entry, req *networkservice.NetworkServiceRequest, opts []grpc.CallOption) (*networkservice.Connection, error)
	reClose(ctx context.Context, e *entry, conn *networkservice.Connection, opts []grpc.CallOption) error
}

// Handle runs events for one connection again from the start of the chain
// that gave it out. Its events are serialized with all others of the
// connection. It outlives the event that created it, but not the connection:
// once the connection is closed every call returns ErrConnectionClosed.
//
// A Handle must not be used by the goroutine running an event of the same
// connection (it would wait for itself); start a goroutine, as heal does.
type Handle struct {
	e *entry
}

// Reentry returns the handle of the connection whose event is running in
// ctx. From then on the chain keeps a copy of the last successful request to
// run again. ok is false when ctx carries no chain event.
func Reentry(ctx context.Context) (h Handle, ok bool) {
	e := entryFrom(ctx)
	if e == nil {
		return Handle{}, false
	}
	e.reentry = true
	return Handle{e: e}, true
}

// ID returns the connection ID.
func (h Handle) ID() string {
	if h.e == nil {
		return ""
	}
	return h.e.id
}

// Request runs the connection's last request again from the start of the
// chain. modify, when not nil, changes a copy of the request first (heal
// clears the mechanism to make the chain select anew); it must keep the
// connection ID.
func (h Handle) Request(ctx context.Context, modify func(*networkservice.NetworkServiceRequest)) (*networkservice.Connection, error) {
	e := h.e
	if e == nil {
		return nil, ErrConnectionClosed
	}
	if err := e.acquire(ctx); err != nil {
		return nil, err
	}
	if e.dead || e.last == nil {
		e.release()
		return nil, ErrConnectionClosed
	}
	req := e.last.Clone()
	if modify != nil {
		modify(req)
	}
	if req.GetConnection().GetId() != e.id {
		e.release()
		return nil, status.Errorf(codes.InvalidArgument, "re-entry changed the connection ID from %q to %q", e.id, req.GetConnection().GetId())
	}
	return e.owner.reRequest(ctx, e, req, e.opts)
}

// Close closes the connection from the start of the chain. Closing a
// connection that is already closed does nothing and returns nil.
func (h Handle) Close(ctx context.Context) error {
	_, err := h.CloseIf(ctx, func(context.Context) bool { return true })
	return err
}

// CloseIf closes the connection from the start of the chain if cond, run
// first under the connection's lock with its metadata in ctx, returns true.
// An element that acts on a timer uses it to check that the timer is still
// the current one: a refresh may have replaced it while it fired. closed
// reports whether the connection was closed by this call.
func (h Handle) CloseIf(ctx context.Context, cond func(ctx context.Context) bool) (closed bool, err error) {
	e := h.e
	if e == nil {
		return false, nil
	}
	if err := e.acquire(ctx); err != nil {
		return false, err
	}
	if e.dead || !cond(newEventContext(ctx, e)) {
		e.release()
		return false, nil
	}
	conn := &networkservice.Connection{Id: e.id}
	if e.last != nil {
		conn = e.last.GetConnection().Clone()
	}
	return true, e.owner.reClose(ctx, e, conn, e.opts)
}

// CloseAll closes every connection the chain holds, each from the start of
// the chain as a Close would (a server stopping gracefully). It returns how
// many it closed and the first error of their Closes.
func CloseAll(ctx context.Context, c any) (int, error) {
	h, ok := c.(interface{ handles() []Handle })
	if !ok {
		return 0, fmt.Errorf("chain: CloseAll of %T, which chain.NewServer or chain.NewClient did not make", c)
	}
	var first error
	closed := 0
	for _, handle := range h.handles() {
		done, err := handle.CloseIf(ctx, func(context.Context) bool { return true })
		if done {
			closed++
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return closed, first
}
