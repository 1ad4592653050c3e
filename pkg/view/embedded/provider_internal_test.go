package embedded

import (
	"context"
	"testing"

	"github.com/tether-mesh/tether/pkg/view"
)

func (p *Provider) groupCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.groups)
}

// TestNoStateLeft: refused joins, ended watches and departed members leave
// no group, lease or timer behind.
func TestNoStateLeft(t *testing.T) {
	t.Parallel()
	p := New()
	defer p.Close()
	ctx := context.Background()
	if _, err := p.Join(ctx, "g", view.Member{}); err == nil {
		t.Fatal("empty member joined")
	}
	if _, err := p.Join(ctx, "", view.Member{ID: "a"}); err == nil {
		t.Fatal("empty group joined")
	}
	if n := p.groupCount(); n != 0 {
		t.Fatalf("%d groups after refused joins", n)
	}
	wctx, cancel := context.WithCancel(ctx)
	w, _ := p.Watch(wctx, "watched", view.View{})
	if n := p.groupCount(); n != 1 {
		t.Fatalf("%d groups with a watcher", n)
	}
	cancel()
	for {
		if _, err := w.Next(ctx); err != nil {
			break
		}
	}
	w.Close() // returns once the provider forgot the watch
	if n := p.groupCount(); n != 0 {
		t.Fatalf("%d groups after the watch ended", n)
	}
	l, _ := p.JoinLease(ctx, "g", view.Member{ID: "a"})
	if _, err := p.JoinLease(ctx, "g", view.Member{ID: "a"}); err == nil {
		t.Fatal("duplicate joined")
	}
	_ = l.Leave(ctx)
	if n := p.groupCount(); n != 0 {
		t.Fatalf("%d groups left", n)
	}
	// The lease's heap entry goes when it comes due; the timer then stops.
	p.mu.Lock()
	entries := len(p.leases)
	p.mu.Unlock()
	if entries > 1 {
		t.Fatalf("%d lease entries for one departed member", entries)
	}
}
