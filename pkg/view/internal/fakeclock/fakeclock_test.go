package fakeclock_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/view/internal/fakeclock"
)

func TestTimersFireInOrderWhenDue(t *testing.T) {
	t.Parallel()
	start := time.Unix(100, 0)
	c := fakeclock.New(start)
	var fired []string
	var at []time.Duration
	record := func(name string) func() {
		return func() {
			fired = append(fired, name)
			at = append(at, c.Now().Sub(start))
		}
	}
	c.AfterFunc(3*time.Second, record("c"))
	c.AfterFunc(time.Second, func() {
		record("a")()
		c.AfterFunc(time.Second, record("b")) // set by a timer, due in the same Advance
	})
	stop := c.AfterFunc(2500*time.Millisecond, record("stopped"))
	if !stop() || stop() {
		t.Fatal("Stop of a pending timer")
	}
	c.AfterFunc(0, record("now"))
	if len(fired) != 0 {
		t.Fatal("a timer fired inside AfterFunc")
	}
	c.Advance(0)
	c.Advance(2 * time.Second)
	if !slices.Equal(fired, []string{"now", "a", "b"}) || !slices.Equal(at, []time.Duration{0, time.Second, 2 * time.Second}) {
		t.Fatalf("fired %v at %v", fired, at)
	}
	if c.Pending() != 1 {
		t.Fatalf("%d pending, want c", c.Pending())
	}
	c.Advance(time.Second)
	if fired[len(fired)-1] != "c" || c.Now() != start.Add(3*time.Second) || c.Pending() != 0 {
		t.Fatalf("fired %v, now %v", fired, c.Now())
	}
}
