package core

import (
	"context"
	"testing"
	"time"
)

// TestWatch: f runs when the context the watch was last armed with ends,
// and a context that is no longer watched runs nothing.
func TestWatch(t *testing.T) {
	type key struct{}
	tests := []struct {
		name string
		// run arms w with ok (f for the context that must run it) or bad
		// (f for one that must not) and returns the function that ends the
		// contexts.
		run func(t *testing.T, w *Watch, ok, bad func()) (end func(), wantRun bool)
	}{
		{"a context that never ends arms nothing", func(t *testing.T, w *Watch, _, bad func()) (func(), bool) {
			if w.Arm(context.Background(), bad) {
				t.Error("Arm reported that Background ended")
			}
			if w.stop != nil {
				t.Error("Background was registered")
			}
			return func() {}, false
		}},
		{"armed again with the same Done channel, one registration", func(t *testing.T, w *Watch, ok, bad func()) (func(), bool) {
			ctx, cancel := context.WithCancel(context.Background())
			w.Arm(ctx, ok)
			w.Arm(ctx, bad)                              // kept: f of the registration in place runs
			w.Arm(context.WithValue(ctx, key{}, 1), bad) // the same Done channel
			if w.done != ctx.Done() {
				t.Error("the registration was not kept")
			}
			return cancel, true
		}},
		{"another context replaces the first", func(t *testing.T, w *Watch, ok, bad func()) (func(), bool) {
			first, cancelFirst := context.WithCancel(context.Background())
			w.Arm(first, bad)
			second, cancelSecond := context.WithCancel(context.Background())
			w.Arm(second, ok)
			return func() { cancelFirst(); cancelSecond() }, true
		}},
		{"a context that ended already", func(t *testing.T, w *Watch, ok, _ func()) (func(), bool) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if !w.Arm(ctx, ok) {
				t.Error("Arm did not report the end")
			}
			return func() {}, true
		}},
		{"stopped", func(t *testing.T, w *Watch, _, bad func()) (func(), bool) {
			ctx, cancel := context.WithCancel(context.Background())
			w.Arm(ctx, bad)
			w.Stop()
			if w.stop != nil || w.done != nil {
				t.Error("Stop left the registration")
			}
			return cancel, false
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran := make(chan struct{}, 1)
			var w Watch
			// A stopped or replaced registration never runs its f: bad fails
			// the test (also if it ran after the test, which panics).
			end, wantRun := tt.run(t, &w, func() { ran <- struct{}{} }, func() { t.Error("f of a context no longer watched ran") })
			end()
			if wantRun {
				select {
				case <-ran:
				case <-time.After(10 * time.Second):
					t.Fatal("f did not run when the context ended")
				}
			}
			w.Stop()
		})
	}
}
