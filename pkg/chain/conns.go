package chain

import (
	"context"
	"sync/atomic"

	"github.com/edwarnicke/genericsync"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// conns is a chain head's table of connections: one entry per connection ID
// with a lock that serializes the ID's events and the ID's metadata.
type conns struct {
	m     genericsync.Map[string, *entry]
	count atomic.Int64
}

// entry is the state of one connection ID in one chain. All fields but id,
// owner and lock are guarded by lock.
type entry struct {
	id    string
	owner reentrant
	// lock is held by the event running for the ID: a buffered channel of one
	// rather than a mutex, so that a waiter can give up when its context ends.
	lock chan struct{}

	// dead is set when the entry left the table: waiters that acquired it
	// look the ID up again.
	dead bool
	// established is set once a Request succeeded.
	established bool
	// values is the connection's metadata, indexed by Key.
	values []any

	// reentry is set once an element asked for a re-entry handle: the
	// head then keeps the last request (and call options) to run again.
	reentry bool
	last    *networkservice.NetworkServiceRequest
	opts    []grpc.CallOption
}

// acquire returns the locked entry for id, creating it when the ID has none.
func (c *conns) acquire(ctx context.Context, id string, owner reentrant) (*entry, error) {
	for {
		e, ok := c.m.Load(id)
		if !ok {
			fresh := &entry{id: id, owner: owner, lock: make(chan struct{}, 1)}
			fresh.lock <- struct{}{}
			if e, ok = c.m.LoadOrStore(id, fresh); !ok {
				c.count.Add(1)
				return fresh, nil
			}
		}
		if err := e.acquire(ctx); err != nil {
			return nil, err
		}
		if !e.dead {
			return e, nil
		}
		e.release()
	}
}

// handles returns a handle for every connection in the table.
func (c *conns) handles() []Handle {
	var hs []Handle
	c.m.Range(func(_ string, e *entry) bool {
		hs = append(hs, Handle{e: e})
		return true
	})
	return hs
}

// acquire waits for the entry's lock or for the end of ctx.
func (e *entry) acquire(ctx context.Context) error {
	select {
	case e.lock <- struct{}{}:
		return nil
	default:
	}
	select {
	case e.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (e *entry) release() {
	<-e.lock
}

// remove takes the locked entry out of the table; whoever waits for it will
// look the ID up again and find a fresh entry.
func (c *conns) remove(e *entry) {
	e.dead = true
	e.values = nil
	e.last = nil
	e.opts = nil
	c.m.Delete(e.id)
	c.count.Add(-1)
}

// afterRequest records the outcome of a Request event on its locked entry
// and releases it.
func (c *conns) afterRequest(e *entry, req *networkservice.NetworkServiceRequest, opts []grpc.CallOption, resp *networkservice.Connection, err error) {
	switch {
	case err != nil:
		if !e.established {
			c.remove(e)
		} else if e.reentry && e.last == nil {
			e.last = lastRequest(req, req.GetConnection())
			e.opts = append(e.opts[:0], opts...)
		}
	default:
		e.established = true
		if e.reentry {
			e.last = lastRequest(req, resp)
			e.opts = append(e.opts[:0], opts...)
		}
	}
	e.release()
}

// afterClose removes the locked entry whatever the outcome of Close and
// releases it.
func (c *conns) afterClose(e *entry) {
	c.remove(e)
	e.release()
}

// lastRequest is what a re-entry runs again: the request as the chain saw it
// with the connection the chain returned.
func lastRequest(req *networkservice.NetworkServiceRequest, resp *networkservice.Connection) *networkservice.NetworkServiceRequest {
	last := &networkservice.NetworkServiceRequest{
		Connection:           resp.Clone(),
		MechanismPreferences: make([]*networkservice.Mechanism, len(req.GetMechanismPreferences())),
	}
	for i, m := range req.GetMechanismPreferences() {
		last.MechanismPreferences[i] = m.Clone()
	}
	return last
}

// eventContext is the context of an event: the caller's context with the
// entry of the event's connection. Metadata lookups find the entry with one
// type assertion when an element passes the head's context on unchanged, and
// through Value when an element derived a context of its own.
type eventContext struct {
	context.Context
	e *entry
}

// entryKey finds the entry through Value.
type entryKey struct{}

func newEventContext(ctx context.Context, e *entry) context.Context {
	return &eventContext{Context: ctx, e: e}
}

func (c *eventContext) Value(key any) any {
	if _, ok := key.(entryKey); ok {
		return c.e
	}
	return c.Context.Value(key)
}

func entryFrom(ctx context.Context) *entry {
	if c, ok := ctx.(*eventContext); ok {
		return c.e
	}
	e, _ := ctx.Value(entryKey{}).(*entry)
	return e
}

// ConnectionCounter is implemented by the chains NewServer and NewClient
// make. Tests and metrics use it to see that no connection outlives its Close.
type ConnectionCounter interface {
	// Connections returns how many connection IDs the chain holds state for,
	// including those whose first Request is still running.
	Connections() int
}
