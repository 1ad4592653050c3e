package embedded_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
)

// BenchmarkLeaveToView is the time from a member's Leave to a watcher's view
// without it, in-process (p50-ms, p99-ms); ns/op is a join and a leave.
func BenchmarkLeaveToView(b *testing.B) {
	p := embedded.New()
	defer p.Close()
	ctx := context.Background()
	w, err := p.Watch(ctx, "g", view.View{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		ms, err := p.Join(ctx, "g", view.Member{ID: "m", Data: []byte("state")})
		if err != nil {
			b.Fatal(err)
		}
		viewtest.WaitFor(b, w, 10*time.Second, viewtest.Has("m"))
		start := time.Now()
		if err := ms.Leave(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, viewtest.WaitFor(b, w, 10*time.Second, viewtest.HasNot("m")).Sub(start))
	}
	viewtest.ReportLatencies(b, lat)
}

// BenchmarkKillToView is the time from the SIGKILL of a member's process,
// joined through the membership service on a unix socket, to a watcher's
// view without it (p50-ms, p99-ms; target under 50 ms). The lease is long
// (10 s): what removes the member is its heartbeat stream breaking. ns/op
// includes starting the child process.
func BenchmarkKillToView(b *testing.B) {
	p := embedded.New(embedded.WithLease(100*time.Millisecond, 10*time.Second))
	defer p.Close()
	target := viewtest.Serve(b, p)
	w, err := p.Watch(context.Background(), "g", view.View{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
	for b.Loop() {
		child := viewtest.SpawnMember(b, target, "g", view.Member{ID: "child"})
		viewtest.WaitFor(b, w, 10*time.Second, viewtest.Has("child"))
		start := time.Now()
		if err := child.Signal(syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, viewtest.WaitFor(b, w, 10*time.Second, viewtest.HasNot("child")).Sub(start))
		child.Kill() // reap it
	}
	viewtest.ReportLatencies(b, lat)
}
