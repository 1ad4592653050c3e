package core

// Log messages shared by the providers, so that operators (and the
// conformance suite) find the same events under the same words. Entries
// carry the fields provider, addr, conn_id and error; never the secret.
const (
	// LogHandshakeFailed is logged (Warn) by a listener when a peer fails the
	// handshake or the setup that follows it, or is refused.
	LogHandshakeFailed = "rdma handshake failed"
	// LogProtocolViolation is logged (Warn) when a peer breaks the protocol
	// and is disconnected.
	LogProtocolViolation = "rdma peer broke the protocol; disconnected"
	// LogAttached is logged (Debug) when a channel is attached.
	LogAttached = "rdma channel attached"
)
