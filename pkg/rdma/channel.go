package rdma

import "context"

// RegionKey names a memory region on its channel. Keys are chosen by the
// region's owner and are only meaningful on the channel that registered them.
type RegionKey uint32

// MaxRegionSize is the largest memory region a channel registers (1 GiB).
const MaxRegionSize = 1 << 30

// Region is local memory registered on a channel, into which the peer may
// write one-sided with Channel.Write.
type Region interface {
	// Key is the region's key; send it to the peer, which passes it to Write.
	Key() RegionKey
	// Bytes is the region's memory. The peer's writes land here; read it
	// after a message the peer sent after its writes, which orders them.
	// Bytes must not be used after the region or its channel is closed.
	Bytes() []byte
	// Close deregisters the region: the peer can no longer write into it.
	// Writes that were already on their way are discarded (with verbs, as
	// with any RDMA, a write racing with the deregistration fails the
	// writer's channel instead: deregister only regions the peer is done
	// with).
	Close() error
}

// Channel is one end of a peer-to-peer data channel bound to one connection ID.
// All methods are safe for concurrent use; concurrent Sends are ordered by
// the sequence numbers they return.
type Channel interface {
	// ConnID is the connection ID the channel belongs to.
	ConnID() string
	// Provider is the name of the provider that made the channel.
	Provider() string

	// Send transmits m (Flags, Header, Payload) after the messages sent before
	// it, blocking while the receiver's window is full, and returns its
	// sequence number (also stored in m.Seq). When Send returns, the message
	// has been handed to the transport (the local completion); it is
	// delivered when Acked reaches the returned sequence number. Until then
	// the channel may refer to m.Payload (Unacked copies it): do not modify
	// it; once Acked reaches the sequence number, it is the caller's again. If
	// ctx ends while Send waits for credit, Send returns ctx's error and
	// nothing was sent.
	Send(ctx context.Context, m *Message) (uint64, error)
	// Recv waits for the next message and stores it in m (see Message). After
	// the channel ended, Recv still returns the messages that arrived before
	// the end, unless the peer broke the protocol, then the reason.
	Recv(ctx context.Context, m *Message) error

	// Write copies data into the peer's region key at offset off, one-sided:
	// the peer's application is not involved. It returns the write's
	// sequence number; the data is in the peer's memory once Acked reaches
	// it, and before any message sent after it is delivered. data may be
	// reused as soon as Write returns. Writes to an unknown key or outside the
	// region fail with ErrUnknownRegion or ErrOutOfBounds and do not affect
	// the channel.
	Write(ctx context.Context, key RegionKey, off uint64, data []byte) (uint64, error)
	// RegisterRegion allocates and registers a region of size bytes that the
	// peer may write into. When it returns, the peer knows the region: a
	// message sent afterwards that names the key can be acted upon.
	RegisterRegion(size int) (Region, error)

	// Acked returns the highest sequence number up to which every message has
	// been received by the peer's application and every write placed in the
	// peer's memory (0 before any). It is cheap enough to ask after every
	// message, and a caller that only polls it sees the peer's progress.
	Acked() uint64
	// WaitAcked waits until Acked reaches seq, the channel ends (its error is
	// returned) or ctx ends.
	WaitAcked(ctx context.Context, seq uint64) error
	// Unacked returns the messages sent but not acknowledged, in sequence
	// order, with the flags, header and payload they were sent with. After
	// the channel ended, these are the messages that may not have been
	// delivered; a sender replays them elsewhere with FlagRetry.
	//
	// The messages, headers and payloads returned are copies owned by the
	// caller, taken atomically with respect to Acked: a message whose
	// sequence number Acked had reached before the call is never returned,
	// and the payload bytes of every message returned are copied before the
	// call returns and before Acked can report that message acknowledged.
	// So a sender may reuse a payload as soon as Acked covers its sequence
	// number, even while another goroutine calls Unacked.
	Unacked() []Message

	// Stats returns counters and the current flow-control state.
	Stats() Stats

	// Done is closed when the channel stops working; Err then says why.
	Done() <-chan struct{}
	// Err returns nil while the channel works, then the reason it ended:
	// wrapping ErrClosed, ErrPeerClosed, ErrPeerLost or ErrProtocol.
	Err() error
	// Close closes the channel cleanly (the peer sees ErrPeerClosed),
	// releases its regions, goroutines and descriptors, and wakes every
	// blocked call. It returns nil, also when called again.
	Close() error
}

// Stats describes a channel's traffic and flow-control state.
type Stats struct {
	// Sent and Received count messages; Written counts one-sided writes sent.
	Sent, Received, Written uint64
	// LastSeq is the last sequence number assigned by this side.
	LastSeq uint64
	// Acked is the same as Channel.Acked.
	Acked uint64
	// InFlight and InFlightBytes count this side's unacknowledged messages
	// and their payload bytes.
	InFlight, InFlightBytes int
	// Queued and QueuedBytes count messages (and payload bytes) that arrived
	// and wait for Recv; they never exceed the receive window (except for one
	// message larger than the window, which is only sent alone).
	Queued, QueuedBytes int
	// WindowMessages and WindowBytes are this side's receive window: what the
	// peer may have unacknowledged at once.
	WindowMessages, WindowBytes int
}
