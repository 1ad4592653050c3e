// Package client is the external-client API of tether: dial the node's
// forwarder, connect to a group, get its view, and call, send to and close
// a connection to one of its members over a peer-to-peer channel.
//
//	c, err := client.Dial("unix:///var/lib/tether/forwarder.sock")
//	conn, err := c.Connect(ctx, "echo")
//	reply, err := conn.Call(ctx, []byte("ping"))
//	buf, err = conn.AppendCall(ctx, buf[:0], nil, []byte("ping")) // no allocation
//	err = conn.Close(ctx)
//	err = c.Close()
//
// The client keeps every connection alive (it refreshes it at a third of
// its lifetime) and heals it when its member, its channel or the
// forwarder fails (pkg/heal); WithHealObserver reports every heal, with
// its duration.
//
// # Delivery
//
// What a call promises, across any number of heals:
//
//   - A Call that returns a reply was handled by a member, which answered
//     it. Replies are never lost or mixed up: an answer reaches only the
//     call it answers, at most once.
//   - A Call that is in flight when its connection heals is sent again to
//     the new member, with call.Request.Retry set, unless the old channel's
//     replay already carried it (then it also carries the mark). A member
//     may therefore see a call twice: once unmarked (perhaps on a member that
//     died before answering) and again marked as a retry. A handler whose
//     effect must not happen twice deduplicates marked requests by its own
//     request identity (Derecho gives the same advice for P2P requests after
//     a failure).
//   - A Call that cannot be answered before its context ends fails with the
//     context's error; when the connection was down at the time, the error
//     says so and why. Nothing is ever dropped silently.
//   - Send is one-way: it returns when the message is handed to the
//     channel. Messages not yet acknowledged by the member when the
//     connection heals are sent again to the new member, marked as retries;
//     Flush waits until everything sent is acknowledged. A message is
//     acknowledged once the member's handler received it. Close does not
//     wait for acknowledgements: Flush before Close what must arrive.
package client
