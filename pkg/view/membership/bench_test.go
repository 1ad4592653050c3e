package membership_test

import (
	"context"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
)

// BenchmarkLeaveToView is the time from the Leave of a member that joined
// through the membership service to the view without it at an observer
// that watches through another client (p50-ms, p99-ms), server in this
// process on a unix socket; ns/op is a join and a leave.
func BenchmarkLeaveToView(b *testing.B) {
	p := embedded.New()
	defer p.Close()
	target := viewtest.Serve(b, p)
	member, observer := viewtest.Dial(b, target), viewtest.Dial(b, target)
	ctx := context.Background()
	w, err := observer.Watch(ctx, "g", view.View{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var lat []time.Duration
	for b.Loop() {
		ms, err := member.Join(ctx, "g", view.Member{ID: "m", Data: []byte("state")})
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
