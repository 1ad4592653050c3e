// Package feed is the view.Watcher that every provider hands out: the
// provider publishes the views it installs, the observer takes the newest
// one with Next, and Joined and Left are computed at delivery, relative to
// the view the observer received before. A slow observer never blocks the
// provider and never makes it buffer more than one view.
package feed

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
)

// Feed is a view.Watcher fed by Publish.
type Feed struct {
	mu sync.Mutex
	// pending is the newest published view not yet delivered; views are
	// shared with other feeds and never changed.
	pending *view.View
	// last is the last view delivered (ID and members), or the view the
	// watch started after.
	last view.View
	// initial is true until the first view is accepted for a watch that
	// started from the zero view: that first view is delivered even with
	// the zero ID (the empty view of an unknown group).
	initial bool
	notify  chan struct{}
	err     error

	stopAfter func() bool
	onClose   func(*Feed)
	closeOnce sync.Once
}

// New returns a feed of the views that follow after. It ends when ctx ends
// or Close is called; onClose, when not nil, then runs once with the feed
// (the provider forgets the feed there). The caller must eventually end the feed.
func New(ctx context.Context, after view.View, onClose func(*Feed)) *Feed {
	f := &Feed{
		last:    view.View{Group: after.Group, ID: after.ID, Members: after.Members},
		initial: after.ID.IsZero(),
		notify:  make(chan struct{}, 1),
		onClose: onClose,
	}
	// The callback may run at once, on another goroutine: it waits for the
	// lock until stopAfter is set.
	f.mu.Lock()
	f.stopAfter = context.AfterFunc(ctx, func() {
		f.end(status.FromContextError(ctx.Err()).Err(), true)
	})
	f.mu.Unlock()
	return f
}

// Publish offers v, the view the provider installed, to the observer. It
// keeps v when v is newer than what the feed already holds and never
// blocks. v must not change afterwards.
func (f *Feed) Publish(v *view.View) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return
	}
	floor := f.last.ID
	if f.pending != nil {
		floor = f.pending.ID
	}
	if (!f.initial || f.pending != nil) && !floor.Less(v.ID) {
		return
	}
	f.pending = v
	f.wake()
}

// Fail ends the feed with err once the view it holds, if any, has been
// delivered. The first end wins.
func (f *Feed) Fail(err error) {
	f.end(err, false)
}

// Close ends the feed at once.
func (f *Feed) Close() {
	f.end(status.Error(codes.Canceled, "view: watch closed"), true)
}

func (f *Feed) end(err error, drop bool) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	if drop {
		f.pending = nil
	}
	f.wake()
	stop := f.stopAfter
	f.mu.Unlock()
	f.closeOnce.Do(func() {
		stop()
		if f.onClose != nil {
			f.onClose(f)
		}
	})
}

// Err returns why the feed ended, or nil while it lasts.
func (f *Feed) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *Feed) wake() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// Next implements view.Watcher.
func (f *Feed) Next(ctx context.Context) (view.View, error) {
	for {
		f.mu.Lock()
		if v := f.pending; v != nil {
			f.pending = nil
			f.initial = false
			joined, left := view.Diff(f.last.Members, v.Members)
			f.last = view.View{Group: v.Group, ID: v.ID, Members: v.Members}
			f.mu.Unlock()
			return view.View{Group: v.Group, ID: v.ID, Members: v.Members, Joined: joined, Left: left}, nil
		}
		if err := f.err; err != nil {
			f.mu.Unlock()
			return view.View{}, err
		}
		f.mu.Unlock()
		select {
		case <-f.notify:
		case <-ctx.Done():
			return view.View{}, status.FromContextError(ctx.Err()).Err()
		}
	}
}
