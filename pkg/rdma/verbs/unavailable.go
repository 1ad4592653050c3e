//go:build !rdmaverbs || !cgo

package verbs

import (
	"context"
	"fmt"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// New returns the verbs provider of a build without RDMA support: its Name
// is "verbs", so that it can be registered and negotiated like the others,
// and Listen and Dial fail with ErrNotBuilt.
func New(opts ...Option) rdma.Provider { return unavailable{o: newOptions(opts)} }

// Available reports why the provider cannot work here, or nil.
func Available() error { return ErrNotBuilt }

type unavailable struct {
	o options
}

func (unavailable) Name() string { return Name }

// String describes the provider and the configuration New was given.
func (u unavailable) String() string {
	return fmt.Sprintf("verbs provider (not built in; %d slots of %d bytes, window %d messages, %d bytes, handshake timeout %v, ack delay %v, close timeout %v, %d handshakes, logger %T)",
		u.o.slots, u.o.slotSize, u.o.windowMessages, u.o.windowBytes, u.o.handshakeTimeout, u.o.ackDelay, u.o.closeTimeout, u.o.maxHandshakes, u.o.log)
}

func (unavailable) Listen(context.Context, string) (rdma.Listener, error) {
	return nil, fmt.Errorf("listen verbs: %w", ErrNotBuilt)
}

func (unavailable) Dial(context.Context, string, string, rdma.Secret) (rdma.Channel, error) {
	return nil, fmt.Errorf("dial verbs: %w", ErrNotBuilt)
}
