package embedded_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/fakeclock"
)

func next(t *testing.T, w view.Watcher) view.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	v, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func idsOf(ms []view.Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func ended(ms view.Membership) bool {
	select {
	case <-ms.Done():
		return true
	default:
		return false
	}
}

// TestLeaseExpiry drives leases with the fake clock: a member is removed
// exactly when a lease time passed since its last heartbeat, members that
// expire together go in one view, and a renewed member stays.
func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	p, clock := newProvider(t)
	ctx := t.Context()
	w, err := p.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	a, err := p.JoinLease(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.JoinLease(ctx, "g", view.Member{ID: "b"})
	c, _ := p.JoinLease(ctx, "g", view.Member{ID: "c"})
	local, _ := p.Join(ctx, "g", view.Member{ID: "local"})
	if a.HeartbeatInterval() != heartbeat || a.LeaseTime() != lease {
		t.Fatalf("lease terms %v %v", a.HeartbeatInterval(), a.LeaseTime())
	}
	v := next(t, w)
	if len(v.Members) != 4 {
		t.Fatalf("members %v", idsOf(v.Members))
	}

	clock.Advance(lease / 2)
	if err := c.Renew(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(lease/2 - time.Nanosecond)
	if ended(a) || ended(b) {
		t.Fatal("expired before the lease time")
	}
	clock.Advance(time.Nanosecond)
	if !ended(a) || !ended(b) || ended(c) || ended(local) {
		t.Fatalf("at the lease time: a %v b %v c %v local %v", ended(a), ended(b), ended(c), ended(local))
	}
	v = next(t, w)
	if got := idsOf(v.Left); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("left %v, want a and b in one view", got)
	}
	if status.Code(a.Err()) != codes.DeadlineExceeded {
		t.Fatalf("Err of an expired lease: %v", a.Err())
	}
	if err := a.Renew(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Renew after expiry: %v", err)
	}
	// c was renewed at lease/2: it expires at lease/2 + lease.
	clock.Advance(lease/2 - time.Nanosecond)
	if ended(c) {
		t.Fatal("a renewed lease expired early")
	}
	clock.Advance(time.Nanosecond)
	if !ended(c) {
		t.Fatal("a renewed lease did not expire")
	}
	// An in-process member never expires.
	clock.Advance(time.Hour)
	if ended(local) {
		t.Fatal("an in-process member expired")
	}
	st, _ := p.Stats(ctx, "g")
	if st.Expiries != 3 || st.Joins != 4 || st.Views != 6 {
		t.Fatalf("stats %+v", st)
	}
	if clock.Pending() != 0 {
		t.Fatalf("%d timers left with no lease", clock.Pending())
	}
}

func TestFailRemovesAtOnce(t *testing.T) {
	t.Parallel()
	p, _ := newProvider(t)
	ctx := t.Context()
	l, err := p.JoinLease(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	l.Fail("stream broke")
	l.Fail("again")
	if !ended(l) || status.Code(l.Err()) != codes.Unavailable {
		t.Fatalf("after Fail: %v", l.Err())
	}
	if err := l.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(l.Err(), l.Err()) || errors.Is(l.Err(), view.ErrLeft) {
		t.Fatal("Leave after Fail changed Err")
	}
	if v, _ := p.View(ctx, "g"); len(v.Members) != 0 {
		t.Fatalf("members %v after Fail", idsOf(v.Members))
	}
}

// TestGroupRecreatedInNewEpoch: a group nobody holds is forgotten, and its
// next view starts a greater epoch, even when the clock went backwards.
func TestGroupRecreatedInNewEpoch(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Unix(2_000_000_000, 0))
	p := embedded.New(embedded.WithClock(clock))
	defer p.Close()
	ctx := t.Context()
	ms, _ := p.Join(ctx, "g", view.Member{ID: "a"})
	first, _ := p.View(ctx, "g")
	_ = ms.Leave(ctx)
	if v, _ := p.View(ctx, "g"); !v.ID.IsZero() {
		t.Fatalf("an idle group kept view %v", v.ID)
	}
	if st, _ := p.Stats(ctx, "g"); st != (view.Stats{}) {
		t.Fatalf("an idle group kept stats %+v", st)
	}
	clock.Advance(-time.Hour)
	ms2, _ := p.Join(ctx, "g", view.Member{ID: "a"})
	second, _ := p.View(ctx, "g")
	if second.ID.Epoch <= first.ID.Epoch || second.ID.Seq != 1 {
		t.Fatalf("recreated group has view %v after %v", second.ID, first.ID)
	}
	if ms2.Member().Incarnation <= ms.Member().Incarnation {
		t.Fatal("incarnation went backwards with the clock")
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	p, _ := newProvider(t)
	ctx := t.Context()
	ms, _ := p.Join(ctx, "g", view.Member{ID: "a"})
	l, _ := p.JoinLease(ctx, "g", view.Member{ID: "b"})
	w, _ := p.Watch(ctx, "g", view.View{})
	next(t, w)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []view.Membership{ms, l} {
		if !ended(m) || status.Code(m.Err()) != codes.Unavailable {
			t.Fatalf("membership after Close: %v", m.Err())
		}
	}
	if _, err := w.Next(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("watch after Close: %v", err)
	}
	if _, err := p.View(ctx, "g"); status.Code(err) != codes.Unavailable {
		t.Fatal(err)
	}
	if _, err := p.Join(ctx, "g", view.Member{ID: "c"}); status.Code(err) != codes.Unavailable {
		t.Fatal(err)
	}
	if _, err := p.Watch(ctx, "g", view.View{}); status.Code(err) != codes.Unavailable {
		t.Fatal(err)
	}
	if _, err := p.Stats(ctx, "g"); status.Code(err) != codes.Unavailable {
		t.Fatal(err)
	}
}

func TestLimitsAndOptions(t *testing.T) {
	t.Parallel()
	l := view.DefaultLimits
	l.MaxMembers = 2
	p := embedded.New(embedded.WithLimits(l), embedded.WithLease(time.Second, time.Millisecond))
	defer p.Close()
	if p.LeaseTime() != 2*time.Second || p.HeartbeatInterval() != time.Second {
		t.Fatalf("a lease shorter than two heartbeats was kept: %v %v", p.HeartbeatInterval(), p.LeaseTime())
	}
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if _, err := p.Join(ctx, "g", view.Member{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Join(ctx, "g", view.Member{ID: "c"}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("join over MaxMembers: %v", err)
	}
}

// TestInputNotAliased: the provider keeps its own copy of a joining member.
func TestInputNotAliased(t *testing.T) {
	t.Parallel()
	p, _ := newProvider(t)
	ctx := t.Context()
	m := view.Member{ID: "a", Labels: map[string]string{"k": "v"}, Data: []byte("data")}
	if _, err := p.Join(ctx, "g", m); err != nil {
		t.Fatal(err)
	}
	m.Labels["k"] = "changed"
	m.Data[0] = 'X'
	v, _ := p.View(ctx, "g")
	if v.Members[0].Labels["k"] != "v" || string(v.Members[0].Data) != "data" {
		t.Fatalf("the provider shares the caller's member: %+v", v.Members[0])
	}
}
