// Package monitor serves the MonitorConnection API of Network Service Mesh
// from a chain: a subscriber first gets the state of every connection its
// selector matches (INITIAL_STATE_TRANSFER), then an UPDATE for every
// Request, refresh or change and a DELETE for every Close.
//
// Mechanism parameters that hold secrets (a channel's secret, tokens) are
// redacted in events: subscribers learn that a connection changed; its owner
// gets the new parameters by refreshing it.
//
// Each subscriber has a bounded queue. One that falls behind is disconnected
// with codes.ResourceExhausted and subscribes again to get the full state:
// no event is ever dropped silently, and a slow subscriber cannot make the
// server hold unbounded memory. Place the element after updatepath, so that
// it records connections as this hop sees them; register the same value as
// the MonitorConnection service of the gRPC server.
package monitor
