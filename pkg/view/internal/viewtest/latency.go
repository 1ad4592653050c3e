package viewtest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/view"
)

// ReportLatencies reports the median and the 99th percentile of ds, in
// milliseconds, as the benchmark's custom metrics p50-ms and p99-ms.
func ReportLatencies(b *testing.B, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q * float64(len(s)-1))
		return float64(s[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// WaitFor reads views from w until one satisfies ok, and returns when that
// view arrived.
func WaitFor(tb testing.TB, w view.Watcher, timeout time.Duration, ok func(view.View) bool) time.Time {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		v, err := w.Next(ctx)
		if err != nil {
			tb.Fatalf("waiting for a view: %v", err)
		}
		if ok(v) {
			return time.Now()
		}
	}
}

// Has returns a predicate: the view holds a member called id.
func Has(id string) func(view.View) bool {
	return func(v view.View) bool { _, ok := v.Member(id); return ok }
}

// HasNot returns a predicate: the view holds no member called id.
func HasNot(id string) func(view.View) bool {
	return func(v view.View) bool { _, ok := v.Member(id); return !ok }
}
