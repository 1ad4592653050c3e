// Package view defines tether's group membership: members, numbered views
// and the Provider interface that every membership backend implements.
//
// A View is one state of a group: its members in rank order (the order in
// which they joined, so the primary, rank 0, is the oldest member) and an ID
// that is totally ordered and strictly increases for every observer. An ID is
// an epoch and a sequence number: a group recreated from nothing (a provider
// restarted, an etcd keyspace wiped) starts a new, greater epoch, so its IDs
// stay greater than every ID handed out before.
//
// Joined and Left are relative to the last view that observer received: an
// observer that skipped intermediate views (Watcher.Next returns the newest
// view, not every one) still sees every change, as Derecho and MySQL Group
// Replication's GCS deliver them. A member is identified within a view by its
// ID and its Incarnation, which the provider assigns at every join: a member
// that left and joined again under the same ID appears in Left with its old
// incarnation and in Joined with its new one.
//
// Providers live in subpackages: embedded (in-process, lease-based failure
// detection; the default on one machine), membership (the gRPC service that
// serves an embedded provider to members in other processes, and a Go client
// of it that is itself a Provider) and etcd (many machines). The package
// conformance checks that a provider keeps the contract described here, and
// viewrefresh is the chain element that routes connections to members.
//
// Errors crossing a Provider are gRPC status errors: codes.InvalidArgument for
// an empty or malformed group or member, codes.AlreadyExists for a member ID
// held by a live member, codes.Unavailable when the provider cannot be
// reached or is closed.
package view
