package etcd_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/etcd"
	"github.com/tether-mesh/tether/pkg/view/internal/wire"
)

func next(t *testing.T, w view.Watcher, ok func(view.View) bool) view.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	for {
		v, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok(v) {
			return v
		}
	}
}

func without(id string) func(view.View) bool {
	return func(v view.View) bool { _, ok := v.Member(id); return !ok }
}

func with(id string) func(view.View) bool {
	return func(v view.View) bool { _, ok := v.Member(id); return ok }
}

// TestViewIDs: a view's ID is the revision of the change that produced it,
// the same for every reader and at any time, including a change etcd made
// on its own (a lease expiry), and writes elsewhere in etcd do not move it.
func TestViewIDs(t *testing.T) {
	t.Parallel()
	endpoint := startEtcd(t)
	c := newClient(t, endpoint)
	ctx := t.Context()
	p := etcd.New(c, etcd.WithTTL(time.Minute))
	defer p.Close()
	hung := newProvider(t, endpoint, etcd.WithTTL(time.Second), etcd.WithHeartbeatInterval(time.Hour))
	w, err := p.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if v := next(t, w, func(view.View) bool { return true }); !v.ID.IsZero() {
		t.Fatalf("unknown group has view %v", v.ID)
	}
	a, err := p.Join(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	joined := next(t, w, with("a"))
	if joined.ID.Seq != a.Member().Incarnation {
		t.Fatalf("view after the join is %v, want the join's revision %d", joined.ID, a.Member().Incarnation)
	}
	h, err := hung.Join(ctx, "g", view.Member{ID: "h"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, w, with("h"))
	expired := next(t, w, without("h"))
	<-h.Done()
	// Unrelated writes move etcd's revision, not the group's view.
	for range 5 {
		if _, err := c.Put(ctx, "/elsewhere", "x"); err != nil {
			t.Fatal(err)
		}
	}
	for _, reader := range []*etcd.Provider{p, newProvider(t, endpoint)} {
		v, err := reader.View(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		if v.ID != expired.ID || len(v.Members) != 1 {
			t.Fatalf("View = %v with %d members, want %v, the watcher's view after the expiry", v.ID, len(v.Members), expired.ID)
		}
	}
	// A fresh watch from nothing starts at the same view.
	w2, err := newProvider(t, endpoint).Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if v := next(t, w2, func(view.View) bool { return true }); v.ID != expired.ID {
		t.Fatalf("a fresh watch starts at %v, want %v", v.ID, expired.ID)
	}
}

// TestCompactedHistory: when etcd compacted the history a reader would
// replay, the view it reads still numbers after every earlier view.
func TestCompactedHistory(t *testing.T) {
	t.Parallel()
	endpoint := startEtcd(t)
	c := newClient(t, endpoint)
	ctx := t.Context()
	p := newProvider(t, endpoint, etcd.WithTTL(time.Minute))
	hung := newProvider(t, endpoint, etcd.WithTTL(time.Second), etcd.WithHeartbeatInterval(time.Hour))
	w, err := p.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := p.Join(ctx, "g", view.Member{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	h, err := hung.Join(ctx, "g", view.Member{ID: "h"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, w, with("h"))
	last := next(t, w, without("h"))
	<-h.Done()
	put, err := c.Put(ctx, "/elsewhere", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, put.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	v, err := newProvider(t, endpoint).View(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if v.ID.Less(last.ID) || len(v.Members) != 1 {
		t.Fatalf("after compaction View = %v with %v, want at least %v with a", v.ID, v.Members, last.ID)
	}
}

// TestKeyspaceRecreated: a keyspace wiped and recreated numbers its views in
// a new, greater epoch.
func TestKeyspaceRecreated(t *testing.T) {
	t.Parallel()
	endpoint := startEtcd(t)
	c := newClient(t, endpoint)
	ctx := t.Context()
	p := newProvider(t, endpoint)
	a, err := p.Join(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := p.View(ctx, "g")
	_ = a.Leave(ctx)
	if _, err := c.Delete(ctx, etcd.DefaultPrefix, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.View(ctx, "g"); !v.ID.IsZero() {
		t.Fatalf("a wiped group has view %v", v.ID)
	}
	if _, err := p.Join(ctx, "g", view.Member{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	after, _ := p.View(ctx, "g")
	if after.ID.Epoch <= before.ID.Epoch || !before.ID.Less(after.ID) {
		t.Fatalf("recreated keyspace: view %v after %v", after.ID, before.ID)
	}
}

// TestMalformedEntries: keys and values under the provider's prefix that it
// did not write are skipped; they neither crash a reader nor hide members.
func TestMalformedEntries(t *testing.T) {
	t.Parallel()
	endpoint := startEtcd(t)
	c := newClient(t, endpoint)
	ctx := t.Context()
	p := newProvider(t, endpoint)
	w, err := p.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := p.Join(ctx, "g", view.Member{ID: "good"}); err != nil {
		t.Fatal(err)
	}
	members := etcd.DefaultPrefix + "members/g/"
	for key, value := range map[string]string{
		members + "garbage":    "\xff\xff\xff",
		members + "other-id":   string(mustMarshal(t, view.Member{ID: "someone-else"})),
		members + "nested/key": string(mustMarshal(t, view.Member{ID: "nested/key"})),
		members + "%zz":        "",
		members + "bad%00id":   string(mustMarshal(t, view.Member{ID: "bad\x00id"})),
		members + "a%2fb":      string(mustMarshal(t, view.Member{ID: "a/b"})), // not canonical
	} {
		if _, err := c.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, members+"fine", string(mustMarshal(t, view.Member{ID: "fine", Data: []byte("written by hand")}))); err != nil {
		t.Fatal(err)
	}
	v := next(t, w, with("fine"))
	if len(v.Members) != 2 || v.Members[0].ID != "good" || v.Members[1].ID != "fine" {
		t.Fatalf("members %+v, want good and fine only", v.Members)
	}
	read, err := newProvider(t, endpoint).View(ctx, "g")
	if err != nil || len(read.Members) != 2 {
		t.Fatalf("View %+v, %v", read.Members, err)
	}
	if _, err := c.Put(ctx, etcd.DefaultPrefix+"epoch", "not a number"); err != nil {
		t.Fatal(err)
	}
	if _, err := newProvider(t, endpoint).View(ctx, "g"); status.Code(err) != codes.DataLoss {
		t.Fatalf("View with a malformed epoch: %v", err)
	}
}

// TestCloseRevokes: closing a provider removes its members at once.
func TestCloseRevokes(t *testing.T) {
	t.Parallel()
	endpoint := startEtcd(t)
	ctx := t.Context()
	observer := newProvider(t, endpoint)
	w, err := observer.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := etcd.New(newClient(t, endpoint), etcd.WithTTL(time.Minute))
	ms, err := p.Join(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, w, with("a"))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	next(t, w, without("a"))
	if status.Code(ms.Err()) != codes.Unavailable {
		t.Fatalf("Err after Close: %v", ms.Err())
	}
	if _, err := p.Join(ctx, "g", view.Member{ID: "b"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Join after Close: %v", err)
	}
	if _, err := p.Watch(ctx, "g", view.View{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Watch after Close: %v", err)
	}
	if p.TTL() != time.Minute {
		t.Fatalf("TTL %v", p.TTL())
	}
	if etcd.New(nil, etcd.WithTTL(10*time.Millisecond)).TTL() != time.Second {
		t.Fatal("a TTL under a second was not raised to one")
	}
}

func mustMarshal(t *testing.T, m view.Member) []byte {
	t.Helper()
	b, err := wire.MarshalMember(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
