// Package etcd is the membership provider for many machines: a group's
// members are keys in etcd, each under a lease that the member keeps alive,
// and a group's views are numbered by etcd revisions.
//
// The keys, under a prefix (WithPrefix, default "/tether/view/"):
//
//	<prefix>epoch                      the keyspace's epoch, created once
//	<prefix>groups/<group>             touched by every join and leave
//	<prefix>members/<group>/<member>   a member, under its lease
//
// Group and member names are path-escaped in keys. A member's value is the
// membership service's Member message without its incarnation, which is the
// key's create revision: unique, and increasing with every join, so members
// sorted by it are in rank (join) order.
//
// Joining is a transaction that creates the member's key only if no live
// member holds it (codes.AlreadyExists otherwise). A view's ID is the
// keyspace's epoch and the revision of the change that produced the view: a
// join, a leave, or the deletion of a member's key when its lease expired.
// Because every join and leave touches the group key, a reader finds that
// revision by replaying only the lease expiries since the group key's last
// change (with etcd's progress notifications to know where the replay
// ends). Should etcd have compacted that history, the view read takes the
// revision just before the compaction point, which is still greater than
// every earlier ID of the group. The epoch is created from the wall clock
// when the keyspace has none, so a keyspace recreated from nothing numbers
// its views after the old one's.
//
// Run etcd with auto-compaction: the first read of a group that has lost
// members to expiry replays the history since the group's last join or
// leave.
package etcd
