package rdma

import "errors"

// Errors returned by channels, listeners and providers. They are sentinel
// values meant for errors.Is; the returned errors usually wrap them with
// context.
var (
	// ErrClosed means the channel, endpoint or listener was closed locally.
	ErrClosed = errors.New("rdma: closed")
	// ErrPeerClosed means the peer closed the channel cleanly.
	ErrPeerClosed = errors.New("rdma: peer closed the channel")
	// ErrPeerLost means the connection to the peer failed: the peer died, the
	// transport broke, or the peer stopped answering.
	ErrPeerLost = errors.New("rdma: connection to peer lost")
	// ErrProtocol means the peer sent something malformed or out of bounds
	// and was disconnected.
	ErrProtocol = errors.New("rdma: protocol violation")
	// ErrAuth means the handshake failed: one side could not prove that it
	// knows the connection's secret.
	ErrAuth = errors.New("rdma: authentication failed")
	// ErrUnknownConnection means the listener does not expect the connection ID.
	ErrUnknownConnection = errors.New("rdma: unknown connection ID")
	// ErrAlreadyAttached means a channel for the connection ID is already
	// attached and the listener refused a second one.
	ErrAlreadyAttached = errors.New("rdma: connection ID already attached")
	// ErrAlreadyExpected means Expect was called twice for one connection ID.
	ErrAlreadyExpected = errors.New("rdma: connection ID already expected")
	// ErrRejected means the listener refused the channel for another reason
	// (unsupported version, listener closing, resources exhausted).
	ErrRejected = errors.New("rdma: channel rejected by listener")
	// ErrTooLarge means a header, payload or region exceeds its maximum size.
	ErrTooLarge = errors.New("rdma: too large")
	// ErrUnknownRegion means a write named a region key the peer has not
	// registered (or has closed).
	ErrUnknownRegion = errors.New("rdma: unknown memory region")
	// ErrOutOfBounds means a write does not fit inside its region.
	ErrOutOfBounds = errors.New("rdma: write outside memory region")
	// ErrUnknownProvider means no provider with that name is registered.
	ErrUnknownProvider = errors.New("rdma: unknown provider")
	// ErrUnreachable means the dialer could not reach a listener at the
	// address (nothing listens there, or the network refused).
	ErrUnreachable = errors.New("rdma: listener unreachable")
	// ErrInvalidArgument means an argument is malformed (an empty or too long
	// connection ID, a bad address, a negative size).
	ErrInvalidArgument = errors.New("rdma: invalid argument")
)

// IsCleanClose reports whether err says that the channel was closed cleanly,
// by either side, rather than failing.
func IsCleanClose(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, ErrPeerClosed)
}
