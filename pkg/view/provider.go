package view

import (
	"context"
	"errors"
)

// Provider is a membership backend: it keeps the views of groups, lets
// members join them and observers watch them. Every method is safe for
// concurrent use.
type Provider interface {
	// View returns the current view of group, with Joined listing all its
	// members. A group nobody has joined has an empty view with the zero ID.
	View(ctx context.Context, group string) (View, error)
	// Watch returns the views of group that follow after, the last view the
	// observer received (the zero View when it has none). The first Next
	// returns the current view at once when it is newer than after (for a
	// zero after, even the empty view of an unknown group), and later ones
	// wait for a newer view. Joined and Left are relative to after and then
	// to the view Next returned before, so an observer that resumes a watch
	// with its last view misses no change. The watch ends with ctx or Close.
	Watch(ctx context.Context, group string, after View) (Watcher, error)
	// Join makes m a member of group. It refuses an ID held by a live member
	// with codes.AlreadyExists. The membership lasts until Leave or until it
	// is lost (the member's lease expired, its connection to the provider
	// broke); ctx bounds the join only.
	Join(ctx context.Context, group string, m Member) (Membership, error)
	// Stats returns the counters of group.
	Stats(ctx context.Context, group string) (Stats, error)
}

// Watcher delivers the views of one group to one observer.
type Watcher interface {
	// Next waits for a view newer than the last one it returned and returns
	// the newest there is: intermediate views may be skipped, never changes.
	// It returns an error when ctx ends or the watch ends (Close, the
	// provider closed, the connection to it broke); a view that was ready
	// before the watch ended is returned first. An observer resumes with
	// Watch from the last view it received.
	Next(ctx context.Context) (View, error)
	// Close ends the watch and releases what it holds. It is safe to call
	// more than once and concurrently with Next.
	Close()
}

// Membership is a member's place in a group.
type Membership interface {
	// Group returns the group joined.
	Group() string
	// Member returns the member as views show it, with its incarnation.
	Member() Member
	// Leave removes the member from the group at once. Leaving a membership
	// that has ended does nothing and returns nil.
	Leave(ctx context.Context) error
	// Done is closed when the membership ends, by Leave or because it was
	// lost.
	Done() <-chan struct{}
	// Err returns nil while the membership lasts, ErrLeft after Leave, and
	// otherwise a status error that says why it was lost:
	// codes.DeadlineExceeded when its lease expired, codes.Unavailable when
	// the provider closed or could no longer be reached.
	Err() error
}

// ErrLeft is what Membership.Err returns after Leave.
var ErrLeft = errors.New("view: the member left its group")

// Stats are the counters of one group, as a provider keeps them: the
// embedded provider counts everything that happens to the group since the
// provider created it; the etcd provider counts what the provider instance
// saw and did.
type Stats struct {
	// Views counts the views installed.
	Views uint64
	// Joins counts the members that joined.
	Joins uint64
	// Leaves counts the members that left cleanly.
	Leaves uint64
	// Expiries counts the members removed because their lease expired.
	Expiries uint64
	// Failures counts the members removed because their connection to the
	// provider broke (the heartbeat stream of the membership service).
	Failures uint64
}
