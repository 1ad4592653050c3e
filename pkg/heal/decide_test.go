package heal

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// describe writes an action the way the tables below spell it.
func describe(a Action) string {
	var parts []string
	if a.Started {
		parts = append(parts, "started")
	}
	if a.Request {
		if a.Reselect {
			parts = append(parts, "request+reselect")
		} else {
			parts = append(parts, "request")
		}
	}
	if a.Failed {
		parts = append(parts, "failed")
	}
	if a.RetryAfter > 0 {
		parts = append(parts, "retry")
	}
	if a.Succeeded {
		parts = append(parts, fmt.Sprintf("succeeded in %v", a.Took))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func TestHealerDecisions(t *testing.T) {
	t.Parallel()
	type step struct {
		ev   Event
		at   time.Duration // since the start of the case
		want string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"channel down: reselect at once", []step{
			{ChannelDown, 0, "started request+reselect"},
			{HealSucceeded, 3 * time.Millisecond, "succeeded in 3ms"},
		}},
		{"control stream down: refresh without reselect", []step{
			{ControlDown, 0, "started request"},
			{HealSucceeded, time.Millisecond, "succeeded in 1ms"},
		}},
		{"moved by the server: refresh", []step{
			{Moved, 0, "started request"},
			{HealSucceeded, time.Millisecond, "succeeded in 1ms"},
		}},
		{"never two heals at once; a failure during a heal heals again", []step{
			{ControlDown, 0, "started request"},
			{ChannelDown, time.Millisecond, "-"},
			{MemberGone, 2 * time.Millisecond, "-"},
			{HealSucceeded, 3 * time.Millisecond, "request+reselect"},
			{HealSucceeded, 5 * time.Millisecond, "succeeded in 5ms"},
		}},
		{"failures back off and keep reselecting", []step{
			{ChannelDown, 0, "started request+reselect"},
			{HealFailed, time.Millisecond, "failed retry"},
			{ChannelDown, 2 * time.Millisecond, "-"}, // waits for the timer
			{RetryDue, 6 * time.Millisecond, "request+reselect"},
			{HealFailed, 7 * time.Millisecond, "failed retry"},
			{RetryDue, 20 * time.Millisecond, "request+reselect"},
			{HealSucceeded, 21 * time.Millisecond, "succeeded in 21ms"},
		}},
		{"close during a heal: nothing after", []step{
			{ChannelDown, 0, "started request+reselect"},
			{Closed, time.Millisecond, "-"},
			{HealFailed, 2 * time.Millisecond, "-"},
			{RetryDue, 3 * time.Millisecond, "-"},
			{ChannelDown, 4 * time.Millisecond, "-"},
		}},
		{"close while waiting to retry", []step{
			{ChannelDown, 0, "started request+reselect"},
			{HealFailed, time.Millisecond, "failed retry"},
			{Closed, 2 * time.Millisecond, "-"},
			{RetryDue, 3 * time.Millisecond, "-"},
		}},
		{"a stale timer after success does nothing", []step{
			{ChannelDown, 0, "started request+reselect"},
			{HealFailed, time.Millisecond, "failed retry"},
			{RetryDue, 2 * time.Millisecond, "request+reselect"},
			{HealSucceeded, 3 * time.Millisecond, "succeeded in 3ms"},
			{RetryDue, 4 * time.Millisecond, "-"},
		}},
		{"a second failure after a success is a new heal", []step{
			{MemberGone, 0, "started request+reselect"},
			{HealSucceeded, time.Millisecond, "succeeded in 1ms"},
			{ControlDown, 10 * time.Millisecond, "started request"},
			{HealSucceeded, 12 * time.Millisecond, "succeeded in 2ms"},
		}},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHealer(DefaultBackoff, rand.New(rand.NewPCG(1, 2)))
			for i, s := range tt.steps {
				if got := describe(h.step(s.ev, t0.Add(s.at))); got != s.want {
					t.Fatalf("step %d (%v): %q, want %q", i, s.ev, got, s.want)
				}
			}
		})
	}
}

func TestBackoffGrowsWithJitterUpToTheCap(t *testing.T) {
	t.Parallel()
	b := Backoff{First: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	rng := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 5 * time.Millisecond, 10 * time.Millisecond},
		{2, 10 * time.Millisecond, 20 * time.Millisecond},
		{3, 20 * time.Millisecond, 40 * time.Millisecond},
		{5, 80 * time.Millisecond, 160 * time.Millisecond},
		{6, 100 * time.Millisecond, 200 * time.Millisecond},
		{60, 100 * time.Millisecond, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := b.delay(tt.attempt, rng)
			if d < tt.min || d > tt.max {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", tt.attempt, d, tt.min, tt.max)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: %d distinct delays in 200: no jitter", tt.attempt, len(seen))
		}
	}
}
