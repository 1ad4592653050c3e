// Package rdma defines tether's peer-to-peer data channels: one API for
// ordered, reliable, credit-flow-controlled messages and one-sided writes into
// registered memory regions, implemented by several providers (inproc, shm,
// tcp and verbs, in subpackages) and chosen per connection by name.
//
// A channel belongs to one connection ID and a 32-byte Secret. The listening
// side registers the connection with Listener.Expect and receives the channel
// from the returned Endpoint; the dialing side calls Provider.Dial with the
// listener's address, the connection ID and the secret. The handshake proves
// that both sides know the secret without sending it (HMAC-SHA256
// challenge-response in both directions, with fresh nonces), so a recorded
// handshake cannot be replayed. A connection's first channel takes one
// round trip: the dialer proves the secret in its first message, which the
// listener takes only once per connection; a later channel (after a break)
// takes the full challenge-response.
//
// # Messages
//
// A Message is an application header of at most MaxHeaderSize bytes and a
// payload of at most MaxPayloadSize bytes, plus flags (FlagRetry marks a
// message replayed after a failure). Send assigns every message the next
// sequence number of the channel; one-sided writes take sequence numbers from
// the same counter, so a receiver may see gaps. The peer acknowledges
// cumulatively: Acked returns the highest sequence number such that every
// message up to it has been returned by the peer's Recv and every write up to
// it has been placed in the peer's memory. WaitAcked waits for that
// completion. Acknowledgements are also the credits of the flow control: a
// sender never has more unacknowledged messages or bytes in flight than the
// receiver's window, so a stalled receiver bounds the memory of both sides.
//
// Send does not copy the payload for safekeeping: the channel refers to
// Message.Payload until the message is acknowledged, so that Unacked can
// return every message not yet acknowledged (with header, payload and flags)
// after the channel broke. The caller must not modify a sent payload before
// Acked covers its sequence number, and may reuse it as soon as Acked does.
// Unacked returns copies that the caller owns, taken under the same lock
// that advances Acked: a message Acked covered before the call is never
// among them, and a payload is copied before Acked can report its message
// acknowledged, so a replay from Unacked and the reuse of acknowledged
// buffers may run concurrently. Acked itself is cheap (an atomic load, or
// at most an uncontended lock) and may be asked after every message.
//
// # Memory regions
//
// RegisterRegion allocates a region of local memory that the peer may write
// into with Write, addressed by the region's key and an offset. Both sides
// check every write against the key and the bounds of the region: the writer
// refuses it with ErrUnknownRegion or ErrOutOfBounds, and a receiver that gets
// a write outside a region from a misbehaving peer disconnects it
// (ErrProtocol) before touching memory.
//
// # Lifetime and errors
//
// Done is closed when the channel stops working and Err then tells why:
// ErrClosed (closed locally), ErrPeerClosed (the peer closed it cleanly),
// ErrPeerLost (the transport failed or the peer died) or ErrProtocol (the peer
// broke the protocol). IsCleanClose tells a clean close from a failure.
// Messages that arrived before the peer closed or was lost are still returned
// by Recv; after a protocol violation nothing more from that peer is
// delivered.
package rdma
