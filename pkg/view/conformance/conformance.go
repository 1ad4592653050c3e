// Package conformance is the test suite every view.Provider passes: the
// embedded provider, the membership client against a server in the same
// process and in another one, and the etcd provider. A provider's tests call
// Run with a function that opens a Backend for each test.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
)

// Backend is a provider under test and what the suite needs to act on it.
type Backend struct {
	// Provider is the provider under test: the suite joins, leaves, watches
	// and reads statistics through it.
	Provider view.Provider
	// Reconnect returns another client of the same membership (a new
	// connection for a remote provider, Provider itself for an in-process
	// one) and a function that closes it.
	Reconnect func(t *testing.T) (p view.Provider, closeFn func())
	// Hung is a client of the same membership whose members stop renewing
	// their lease once they joined, as a member whose process hangs.
	Hung view.Provider
	// Expire makes the leases of hung members run out by advancing a fake
	// clock; nil when leases run in real time.
	Expire func()
	// Wait bounds how long the suite waits for what takes a lease to run out
	// in real time or a dead process to be noticed.
	Wait time.Duration
	// Spawn starts a member in another process, joined to group with m, and
	// returns once it has joined, with a function that kills the process
	// with SIGKILL.
	Spawn func(t *testing.T, group string, m view.Member) (kill func())
	// KillIsFailure is set when the provider removes a killed member because
	// its connection broke, which it counts in Stats.Failures, rather than
	// when its lease runs out.
	KillIsFailure bool
}

// prompt bounds how long the suite waits for what should happen at once
// (generous: the race detector and a loaded machine slow everything).
const prompt = 10 * time.Second

var groupCount atomic.Int64

// Group returns a group name unique to the test, for backends that tests
// share.
func Group(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s-%d-%d", name, time.Now().UnixNano()%1e9, groupCount.Add(1))
}

// Run runs the suite; open returns the backend of one test.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"BadInput", testBadInput},
		{"UnknownGroupFillsIn", testUnknownGroupFillsIn},
		{"IDsIncreaseJoinedLeftExact", testChurn},
		{"LeaveSeenAtOnce", testLeave},
		{"HungMemberExpires", testHung},
		{"KilledMemberRemoved", testKilled},
		{"DuplicateLiveIDRefused", testDuplicate},
		{"DataDeliveredWithView", testData},
		{"WatchResumesAfterReconnect", testResume},
		{"WatchClose", testWatchClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, open(t))
		})
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v (%v), want %v", what, status.Code(err), err, code)
	}
}

func testBadInput(t *testing.T, b Backend) {
	ctx := t.Context()
	p := b.Provider
	m := view.Member{ID: "m"}
	_, err := p.View(ctx, "")
	wantCode(t, "View of an empty group", err, codes.InvalidArgument)
	_, err = p.Watch(ctx, "", view.View{})
	wantCode(t, "Watch of an empty group", err, codes.InvalidArgument)
	_, err = p.Join(ctx, "", m)
	wantCode(t, "Join of an empty group", err, codes.InvalidArgument)
	_, err = p.Join(ctx, Group(t), view.Member{})
	wantCode(t, "Join with an empty member ID", err, codes.InvalidArgument)
	_, err = p.Join(ctx, Group(t), view.Member{ID: "x", Data: make([]byte, view.DefaultLimits.MaxDataBytes+1)})
	wantCode(t, "Join with oversized data", err, codes.InvalidArgument)
	_, err = p.Join(ctx, Group(t), view.Member{ID: "bad\x00id"})
	wantCode(t, "Join with a control character in the ID", err, codes.InvalidArgument)
	_, err = p.Stats(ctx, "")
	wantCode(t, "Stats of an empty group", err, codes.InvalidArgument)

	group := Group(t)
	v, err := p.View(ctx, group)
	if err != nil {
		t.Fatalf("View of an unknown group: %v", err)
	}
	if v.Group != group || !v.ID.IsZero() || len(v.Members) != 0 {
		t.Fatalf("View of an unknown group = %+v, want an empty view with the zero ID", v)
	}
	// Refused joins left nothing behind: the group is still unknown.
	if v, err := p.View(ctx, group); err != nil || !v.ID.IsZero() {
		t.Fatalf("after refused joins: %+v, %v", v, err)
	}
}

func testUnknownGroupFillsIn(t *testing.T, b Backend) {
	group := Group(t)
	o := watch(t, b.Provider, group, view.View{})
	v := o.next(prompt)
	if !v.ID.IsZero() || len(v.Members) != 0 {
		t.Fatalf("first view of an unknown group = %+v, want empty with the zero ID", v)
	}
	ms := join(t, b.Provider, group, view.Member{ID: "first"})
	v = o.until(prompt, has(ms))
	if v.ID.IsZero() || len(v.Joined) != 1 || !v.Joined[0].Same(ms.Member()) {
		t.Fatalf("view after the first join = %+v", v)
	}
	got, err := b.Provider.View(t.Context(), group)
	if err != nil || got.ID.Compare(v.ID) < 0 || len(got.Members) != 1 || len(got.Joined) != 1 {
		t.Fatalf("View after the first join = %+v, %v", got, err)
	}
}

// testChurn has members join and leave concurrently while two observers
// watch: one reads every view it can, the other reads only at the end (so it
// skips views). Both check every view against the one before.
func testChurn(t *testing.T, b Backend) {
	group := Group(t)
	fast := watch(t, b.Provider, group, view.View{})
	slow := watch(t, b.Provider, group, view.View{})
	fast.next(prompt)
	slow.next(prompt)

	const workers, idsPerWorker, rounds = 3, 2, 6
	var (
		mu    sync.Mutex
		final = map[string]view.Member{}
		wg    sync.WaitGroup
		errs  = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42)) //nolint:gosec // a reproducible test schedule, not a secret
			held := map[string]view.Membership{}
			for r := range rounds {
				for i := range idsPerWorker {
					id := fmt.Sprintf("w%d-m%d", w, i)
					last := r == rounds-1
					if ms, ok := held[id]; ok && (rng.IntN(2) == 0 || (last && i%2 == 1)) {
						if err := ms.Leave(t.Context()); err != nil {
							errs <- fmt.Errorf("leave %s: %w", id, err)
							return
						}
						delete(held, id)
					} else if !ok && (rng.IntN(2) == 0 || (last && i%2 == 0)) {
						ms, err := b.Provider.Join(t.Context(), group, view.Member{ID: id, Data: []byte(fmt.Sprintf("round %d", r))})
						if err != nil {
							errs <- fmt.Errorf("join %s: %w", id, err)
							return
						}
						held[id] = ms
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for id, ms := range held {
				final[id] = ms.Member()
				t.Cleanup(func() { _ = ms.Leave(context.Background()) })
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	// The fast observer reads while the members churn.
	views := 0
	for churning := true; churning; {
		select {
		case <-done:
			churning = false
		default:
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
			if v, err := fast.w.Next(ctx); err == nil {
				fast.check(v)
				views++
			}
			cancel()
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	isFinal := func(v view.View) bool {
		if len(v.Members) != len(final) {
			return false
		}
		for _, m := range v.Members {
			if f, ok := final[m.ID]; !ok || !f.Same(m) {
				return false
			}
		}
		return true
	}
	fast.until(prompt, isFinal)
	slow.until(prompt, isFinal)
	t.Logf("the fast observer read %d views during the churn, the slow one %d in all", views, slow.count)
}

func testLeave(t *testing.T, b Backend) {
	group := Group(t)
	o := watch(t, b.Provider, group, view.View{})
	o.next(prompt)
	stay := join(t, b.Provider, group, view.Member{ID: "stay"})
	ms := join(t, b.Provider, group, view.Member{ID: "leaver"})
	o.until(prompt, has(ms))
	start := time.Now()
	if err := ms.Leave(t.Context()); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	v := o.until(prompt, hasNot(ms))
	elapsed := time.Since(start)
	if len(v.Left) != 1 || !v.Left[0].Same(ms.Member()) || len(v.Joined) != 0 {
		t.Fatalf("view after the leave: joined %v left %v, want left = [leaver] only", ids(v.Joined), ids(v.Left))
	}
	if len(v.Members) != 1 || !v.Members[0].Same(stay.Member()) {
		t.Fatalf("view after the leave has members %v", ids(v.Members))
	}
	select {
	case <-ms.Done():
	default:
		t.Fatal("Done is open after Leave")
	}
	if !errors.Is(ms.Err(), view.ErrLeft) {
		t.Fatalf("Err after Leave = %v, want ErrLeft", ms.Err())
	}
	if err := ms.Leave(t.Context()); err != nil {
		t.Fatalf("a second Leave: %v", err)
	}
	st, err := b.Provider.Stats(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leaves != 1 || st.Expiries != 0 || st.Failures != 0 || st.Joins != 2 || st.Views < 3 {
		t.Fatalf("stats after two joins and a leave: %+v", st)
	}
	t.Logf("leave seen by the watcher %v after Leave was called", elapsed)
}

func testHung(t *testing.T, b Backend) {
	group := Group(t)
	o := watch(t, b.Provider, group, view.View{})
	o.next(prompt)
	stay := join(t, b.Provider, group, view.Member{ID: "healthy"})
	ms := join(t, b.Hung, group, view.Member{ID: "hung"})
	o.until(prompt, has(ms))
	wait := prompt
	if b.Expire != nil {
		b.Expire()
	} else {
		wait = b.Wait
	}
	v := o.until(wait, hasNot(ms))
	if len(v.Left) != 1 || !v.Left[0].Same(ms.Member()) {
		t.Fatalf("view after the expiry left %v, want [hung]", ids(v.Left))
	}
	if _, ok := v.Member(stay.Member().ID); !ok {
		t.Fatal("the healthy member was removed with the hung one")
	}
	select {
	case <-ms.Done():
	case <-time.After(wait):
		t.Fatal("the hung member's membership did not end")
	}
	if status.Code(ms.Err()) != codes.DeadlineExceeded {
		t.Fatalf("Err of an expired membership = %v, want DeadlineExceeded", ms.Err())
	}
	st, err := b.Hung.Stats(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expiries != 1 {
		t.Fatalf("stats after an expiry: %+v", st)
	}
}

func testKilled(t *testing.T, b Backend) {
	group := Group(t)
	o := watch(t, b.Provider, group, view.View{})
	o.next(prompt)
	offered := view.Member{
		ID:        "child",
		Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/child.sock"},
		Labels:    map[string]string{"process": "child"},
		Data:      []byte("offered by another process"),
	}
	kill := b.Spawn(t, group, offered)
	v := o.until(prompt, func(v view.View) bool { _, ok := v.Member("child"); return ok })
	got, _ := v.Member("child")
	offered.Incarnation = got.Incarnation
	if !got.Equal(offered) {
		t.Fatalf("the child's member in the view = %+v, want %+v", got, offered)
	}
	start := time.Now()
	kill()
	v = o.until(b.Wait, func(v view.View) bool { _, ok := v.Member("child"); return !ok })
	t.Logf("the killed member was removed %v after SIGKILL", time.Since(start))
	if len(v.Left) != 1 || !v.Left[0].Same(got) {
		t.Fatalf("view after the kill left %v, want [child]", ids(v.Left))
	}
	if b.KillIsFailure {
		st, err := b.Provider.Stats(t.Context(), group)
		if err != nil {
			t.Fatal(err)
		}
		if st.Failures != 1 || st.Expiries != 0 {
			t.Fatalf("stats after a kill: %+v, want one failure and no expiry", st)
		}
	}
}

func testDuplicate(t *testing.T, b Backend) {
	group := Group(t)
	ctx := t.Context()
	first := join(t, b.Provider, group, view.Member{ID: "dup"})
	_, err := b.Provider.Join(ctx, group, view.Member{ID: "dup"})
	wantCode(t, "a second join of a live ID", err, codes.AlreadyExists)
	other, closeOther := b.Reconnect(t)
	defer closeOther()
	_, err = other.Join(ctx, group, view.Member{ID: "dup"})
	wantCode(t, "a join of a live ID from another client", err, codes.AlreadyExists)
	if v, err := b.Provider.View(ctx, group); err != nil || len(v.Members) != 1 || !v.Members[0].Same(first.Member()) {
		t.Fatalf("refused joins changed the view: %+v, %v", v, err)
	}
	if err := first.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	again := join(t, b.Provider, group, view.Member{ID: "dup"})
	if again.Member().Incarnation <= first.Member().Incarnation {
		t.Fatalf("incarnation of the second join %d is not greater than the first's %d", again.Member().Incarnation, first.Member().Incarnation)
	}
}

func testData(t *testing.T, b Backend) {
	group := Group(t)
	o := watch(t, b.Provider, group, view.View{})
	o.next(prompt)
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	offered := view.Member{
		ID:        "data",
		Endpoints: map[string]string{view.EndpointGRPC: "tcp://127.0.0.1:5001", "shm": "/dev/shm/tether-data"},
		Labels:    map[string]string{"zone": "a", "role": "primary"},
		Data:      data,
	}
	ms := join(t, b.Provider, group, offered)
	offered.Incarnation = ms.Member().Incarnation
	if !ms.Member().Equal(offered) {
		t.Fatalf("Member() = %+v, want what was offered", ms.Member())
	}
	v := o.until(prompt, has(ms))
	if len(v.Joined) != 1 || !v.Joined[0].Equal(offered) {
		t.Fatalf("the view that adds the member carries %+v, want %+v", v.Joined, offered)
	}
	got, err := b.Provider.View(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := got.Member("data"); !ok || !m.Equal(offered) {
		t.Fatalf("View carries %+v, want %+v", m, offered)
	}
	// A fresh observer gets the data with its first view.
	late := watch(t, b.Provider, group, view.View{})
	if v := late.next(prompt); len(v.Joined) != 1 || !v.Joined[0].Equal(offered) {
		t.Fatalf("a late observer's first view carries %+v", v.Joined)
	}
}

func testResume(t *testing.T, b Backend) {
	group := Group(t)
	a := join(t, b.Provider, group, view.Member{ID: "a"})
	p1, close1 := b.Reconnect(t)
	o1 := watch(t, p1, group, view.View{})
	v1 := o1.until(prompt, has(a))
	o1.w.Close()
	close1()

	// While nobody watches, b joins and a leaves.
	bm := join(t, b.Provider, group, view.Member{ID: "b"})
	if err := a.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}

	p2, close2 := b.Reconnect(t)
	defer close2()
	o2 := watch(t, p2, group, v1)
	v := o2.next(prompt)
	if !v1.ID.Less(v.ID) {
		t.Fatalf("resumed view %v is not after %v", v.ID, v1.ID)
	}
	if len(v.Joined) != 1 || !v.Joined[0].Same(bm.Member()) || len(v.Left) != 1 || !v.Left[0].Same(a.Member()) {
		t.Fatalf("resumed view: joined %v left %v, want joined [b] left [a]", ids(v.Joined), ids(v.Left))
	}

	// Resuming from the current view waits for the next change.
	o3 := watch(t, p2, group, v)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if extra, err := o3.w.Next(ctx); err == nil {
		t.Fatalf("a watch resumed from the current view delivered %v at once", extra.ID)
	}
	c := join(t, b.Provider, group, view.Member{ID: "c"})
	if v := o3.until(prompt, has(c)); len(v.Joined) != 1 || len(v.Left) != 0 {
		t.Fatalf("after resuming from the current view: joined %v left %v", ids(v.Joined), ids(v.Left))
	}
}

func testWatchClose(t *testing.T, b Backend) {
	group := Group(t)
	o := watch(t, b.Provider, group, view.View{})
	o.next(prompt)
	o.w.Close()
	o.w.Close()
	ctx, cancel := context.WithTimeout(t.Context(), prompt)
	defer cancel()
	if _, err := o.w.Next(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Next after Close: %v (context %v), want an error at once", err, ctx.Err())
	}
	// A watch ends with its context.
	wctx, wcancel := context.WithCancel(t.Context())
	w, err := b.Provider.Watch(wctx, group, view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	wcancel()
	if _, err := w.Next(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Next after the watch's context ended: %v", err)
	}
}

// join joins through p and leaves when the test ends.
func join(t *testing.T, p view.Provider, group string, m view.Member) view.Membership {
	t.Helper()
	ms, err := p.Join(t.Context(), group, m)
	if err != nil {
		t.Fatalf("join %s to %s: %v", m.ID, group, err)
	}
	if got := ms.Member(); got.ID != m.ID || got.Incarnation == 0 || ms.Group() != group {
		t.Fatalf("joined as %+v in %q", got, ms.Group())
	}
	t.Cleanup(func() { _ = ms.Leave(context.Background()) })
	return ms
}

func has(ms view.Membership) func(view.View) bool {
	return func(v view.View) bool {
		m, ok := v.Member(ms.Member().ID)
		return ok && m.Same(ms.Member())
	}
}

func hasNot(ms view.Membership) func(view.View) bool {
	f := has(ms)
	return func(v view.View) bool { return !f(v) }
}

func ids(ms []view.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%s#%d", m.ID, m.Incarnation)
	}
	return out
}

// observer watches a group and checks every view it receives against the
// one before.
type observer struct {
	t     *testing.T
	group string
	w     view.Watcher
	last  view.View
	got   bool
	count int
}

func watch(t *testing.T, p view.Provider, group string, after view.View) *observer {
	t.Helper()
	w, err := p.Watch(t.Context(), group, after)
	if err != nil {
		t.Fatalf("watch %s: %v", group, err)
	}
	t.Cleanup(w.Close)
	return &observer{t: t, group: group, w: w, last: after, got: !after.ID.IsZero()}
}

func (o *observer) next(timeout time.Duration) view.View {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(o.t.Context(), timeout)
	defer cancel()
	v, err := o.w.Next(ctx)
	if err != nil {
		o.t.Fatalf("no view of %s within %v: %v (last %v with %v)", o.group, timeout, err, o.last.ID, ids(o.last.Members))
	}
	o.check(v)
	return v
}

// until returns the last view received when it satisfies ok, and otherwise
// reads views until one does.
func (o *observer) until(timeout time.Duration, ok func(view.View) bool) view.View {
	o.t.Helper()
	if o.count > 0 && ok(o.last) {
		return o.last
	}
	deadline := time.Now().Add(timeout)
	for {
		v := o.next(time.Until(deadline))
		if ok(v) {
			return v
		}
	}
}

// check verifies v against the last view: IDs strictly increase, Joined and
// Left are exactly the difference, members are in rank order with the data
// they joined with.
func (o *observer) check(v view.View) {
	t := o.t
	t.Helper()
	o.count++
	if v.Group != o.group {
		t.Fatalf("view of group %q on a watch of %q", v.Group, o.group)
	}
	if o.got && !o.last.ID.Less(v.ID) {
		t.Fatalf("view ID %v does not increase on %v", v.ID, o.last.ID)
	}
	seen := map[string]bool{}
	for i, m := range v.Members {
		if seen[m.ID] {
			t.Fatalf("view %v lists %s twice", v.ID, m.ID)
		}
		seen[m.ID] = true
		if m.Incarnation == 0 {
			t.Fatalf("view %v: member %s has no incarnation", v.ID, m.ID)
		}
		if i > 0 && v.Members[i-1].Incarnation >= m.Incarnation {
			t.Fatalf("view %v: members %v are not in rank (join) order", v.ID, ids(v.Members))
		}
	}
	same := func(list []view.Member, m view.Member) bool {
		return slices.ContainsFunc(list, m.Same)
	}
	for _, m := range v.Left {
		if !same(o.last.Members, m) {
			t.Fatalf("view %v: left %s#%d was not in the last view %v", v.ID, m.ID, m.Incarnation, ids(o.last.Members))
		}
		if same(v.Members, m) {
			t.Fatalf("view %v: left %s#%d is still a member", v.ID, m.ID, m.Incarnation)
		}
	}
	for _, m := range v.Joined {
		if same(o.last.Members, m) {
			t.Fatalf("view %v: joined %s#%d was in the last view", v.ID, m.ID, m.Incarnation)
		}
		i := slices.IndexFunc(v.Members, m.Same)
		if i < 0 {
			t.Fatalf("view %v: joined %s#%d is not a member", v.ID, m.ID, m.Incarnation)
		}
		if !v.Members[i].Equal(m) {
			t.Fatalf("view %v: joined %s differs from the member in the view", v.ID, m.ID)
		}
	}
	// last - left + joined = members
	want := map[string]uint64{}
	for _, m := range o.last.Members {
		if !same(v.Left, m) {
			want[m.ID] = m.Incarnation
		}
	}
	for _, m := range v.Joined {
		if _, dup := want[m.ID]; dup {
			t.Fatalf("view %v: %s joined again without leaving", v.ID, m.ID)
		}
		want[m.ID] = m.Incarnation
	}
	if len(want) != len(v.Members) {
		t.Fatalf("view %v: last %v - left %v + joined %v != members %v", v.ID, ids(o.last.Members), ids(v.Left), ids(v.Joined), ids(v.Members))
	}
	for _, m := range v.Members {
		if inc, ok := want[m.ID]; !ok || inc != m.Incarnation {
			t.Fatalf("view %v: last %v - left %v + joined %v != members %v", v.ID, ids(o.last.Members), ids(v.Left), ids(v.Joined), ids(v.Members))
		}
	}
	o.last = v
	o.got = true
}
