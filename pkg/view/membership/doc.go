// Package membership serves an embedded provider over gRPC, so that members
// in other processes join its groups, and is the Go client of that service,
// itself a view.Provider: a member in another process uses the same interface
// as one in the provider's process.
//
// A member's session is one bidirectional stream (see membership.proto): a
// join, then heartbeats, then a leave. The stream breaking is itself the
// failure signal: when a member's process dies, the kernel closes its socket,
// the stream breaks and the member is removed from the next view at once,
// long before its lease would expire; the lease only catches a member that
// hangs with its connection open.
//
// The forwarder registers the service on its gRPC server with Register and
// listens where members can reach it (Listen: "unix:///run/tether/forwarder.sock"
// or "tcp://127.0.0.1:5002"); a member dials the same URL with Dial.
package membership
