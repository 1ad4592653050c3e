// Package call puts request/reply calls and one-way messages on a channel of
// pkg/rdma: Serve runs a member's handler for every message of a channel and
// answers calls; Caller is the client side, whose channel may change under it
// when a connection heals.
//
// A message's rdma header starts with a kind byte and a correlation ID; the
// rest, up to MaxHeaderSize bytes, is the application's header.
//
// Cost: Caller.AppendCall with a buffer that has room allocates nothing;
// a call's request buffer is reused once its channel acknowledged it (see
// rdma.Channel.Unacked). Call returns each answer in a new slice. A call
// made while no other is pending takes no lock: two compare-and-swaps on
// the caller's state.
//
// Delivery: a call is answered at most once to its caller, which waits for
// the answer until its context ends (then the call fails with the context's
// error). A call that was sent but not answered when its channel changed is
// sent again on the new channel, marked as a retry, unless the old
// channel's replay already carried it; so a handler may see a call twice,
// the second time with Request.Retry set, and should deduplicate by its own
// request identity when the call is not idempotent.
package call
