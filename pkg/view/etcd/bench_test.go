package etcd_test

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/etcd"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
)

// BenchmarkLeaveToView is the time from a member's Leave to another
// provider instance's watcher's view without it, through a one-node etcd on
// loopback (p50-ms, p99-ms); ns/op is a join and a leave.
func BenchmarkLeaveToView(b *testing.B) {
	endpoint := startEtcd(b)
	p := newProvider(b, endpoint)
	observer := newProvider(b, endpoint)
	ctx := context.Background()
	w, err := observer.Watch(ctx, "g", view.View{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
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

// BenchmarkKillToView is the time from the SIGKILL of a member's process to
// a watcher's view without it (p50-ms, p99-ms; target: the lease TTL, 1 s,
// plus 0.5 s). etcd removes the member when its lease expires; its lessor
// looks for expired leases every 500 ms. The kill comes a random 0-700 ms
// after the join, so that it falls anywhere between the member's renewals
// (every 333 ms) and anywhere in the lessor's period: without that, every
// iteration would start right after the lessor's last pass and measure the
// same phase. ns/op includes starting the child and that delay.
func BenchmarkKillToView(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	endpoint := startEtcd(b)
	observer := newProvider(b, endpoint)
	w, err := observer.Watch(context.Background(), "g", view.View{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
	for b.Loop() {
		child := spawn(b, endpoint, etcd.DefaultPrefix, "g", view.Member{ID: "child"})
		viewtest.WaitFor(b, w, 10*time.Second, viewtest.Has("child"))
		time.Sleep(time.Duration(rng.Int64N(int64(700 * time.Millisecond)))) // jitter, see above
		start := time.Now()
		if err := child.Signal(syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, viewtest.WaitFor(b, w, 10*time.Second, viewtest.HasNot("child")).Sub(start))
		child.Kill()
	}
	viewtest.ReportLatencies(b, lat)
}
