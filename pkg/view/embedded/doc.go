// Package embedded is the in-process membership provider, the default on
// one machine: it keeps the views of every group in memory and numbers them
// itself. Members in the same process join with Join and stay until they
// leave; members in other processes join through the membership service
// (package membership), which holds a Lease for each of them, renewed by the
// member's heartbeats and ended at once when its heartbeat stream breaks or
// when no heartbeat came within the lease time.
//
// Time is read from a Clock (WithClock), so that tests expire leases
// deterministically.
package embedded
