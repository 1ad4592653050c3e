package rdma

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Provider opens listeners and dials channels for one kind of transport.
// Addresses are plain strings whose format belongs to the provider (a name,
// a unix socket path, host:port), so they fit in connection parameters.
type Provider interface {
	// Name is the provider's name, as used in mechanism parameters
	// ("inproc", "shm", "tcp", "verbs").
	Name() string
	// Listen opens a listener on addr. An empty addr asks the provider to
	// choose one; Listener.Addr returns the address to dial.
	Listen(ctx context.Context, addr string) (Listener, error)
	// Dial opens a channel for connID to the listener at addr, proving
	// knowledge of secret.
	Dial(ctx context.Context, addr, connID string, secret Secret) (Channel, error)
}

// Listener accepts channels for the connection IDs it has been told to
// expect; one listener serves many connection IDs on one address, telling
// them apart during the handshake.
type Listener interface {
	// Addr is the address peers dial.
	Addr() string
	// Expect registers connID and its secret and returns the Endpoint on
	// which its channels arrive. Expecting an ID that is already expected
	// fails with ErrAlreadyExpected.
	Expect(connID string, secret Secret) (Endpoint, error)
	// Stats returns the listener's counters.
	Stats() ListenerStats
	// Close stops listening, closes every endpoint and every channel they
	// accepted, and releases the listener's goroutines and descriptors.
	Close() error
}

// Endpoint is the listening side of one connection ID.
//
// At most one channel per connection ID is attached at a time: while the
// channel returned by Accept (or waiting to be accepted) works, a further
// attach with the right secret is refused with ErrAlreadyAttached. Once that
// channel has ended, the peer may attach again (after a transient failure)
// and Accept returns the new channel.
type Endpoint interface {
	// ConnID is the endpoint's connection ID.
	ConnID() string
	// Accept waits for the peer to attach and returns the channel.
	Accept(ctx context.Context) (Channel, error)
	// Close stops expecting the connection ID, refuses further attaches, and
	// closes the attached channel, if any. Accept then returns ErrClosed.
	Close() error
}

// ListenerStats counts what happened on a listener.
type ListenerStats struct {
	// Accepted counts channels attached.
	Accepted uint64
	// HandshakeFailures counts peers that failed to authenticate, sent a
	// malformed handshake or setup, or timed out.
	HandshakeFailures uint64
	// Rejected counts authenticated attaches that were refused (unknown
	// connection ID, already attached).
	Rejected uint64
	// ProtocolErrors counts accepted channels that were disconnected because
	// the peer broke the protocol.
	ProtocolErrors uint64
}

// Registry maps provider names to providers. The zero value is empty and
// ready to use; it is safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	providers map[string]Provider
}

// NewRegistry returns a registry holding providers.
func NewRegistry(providers ...Provider) (*Registry, error) {
	r := &Registry{}
	for _, p := range providers {
		if err := r.Register(p); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds p under p.Name(); a name can be registered once.
func (r *Registry) Register(p Provider) error {
	name := p.Name()
	if name == "" {
		return fmt.Errorf("%w: provider with an empty name", ErrInvalidArgument)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.providers[name]; ok {
		return fmt.Errorf("%w: provider %q registered twice", ErrInvalidArgument, name)
	}
	if r.providers == nil {
		r.providers = make(map[string]Provider)
	}
	r.providers[name] = p
	return nil
}

// Lookup returns the provider called name, or an error wrapping ErrUnknownProvider.
func (r *Registry) Lookup(name string) (Provider, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.providers[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProvider, name)
	}
	return p, nil
}

// Names returns the registered provider names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.providers))
	for name := range r.providers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
