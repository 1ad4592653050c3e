package e2e

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/heal"
	"github.com/tether-mesh/tether/pkg/sandbox"
)

var soak = flag.Duration("soak", 0, "run the soak test for this long (0: skip)")

// TestSoak kills a random member every few hundred milliseconds while 32
// connections make sequenced calls, and checks that no answered call is
// lost, every retry is marked, every connection heals, and nothing leaks.
// It runs only with -soak=DURATION.
func TestSoak(t *testing.T) {
	if *soak <= 0 {
		t.Skip("the soak test runs with -soak=DURATION (CI runs it for 60s)")
	}
	const members, connections = 4, 32
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	var summary string
	t.Run("soak", func(t *testing.T) {
		sb := sandbox.New(t)
		fwd := sb.Forwarder()
		for i := range members {
			sb.Member(fwd, "echo", fmt.Sprintf("m%d", i+1), sandbox.WithChannels("shm", "tcp"))
		}
		sb.WaitMembers(fwd, "echo", members)
		var mu sync.Mutex
		var heals []time.Duration
		started := 0
		c := sb.Client(fwd, client.WithHealObserver(func(r heal.Report) {
			mu.Lock()
			defer mu.Unlock()
			switch r.Kind {
			case heal.Started:
				started++
			case heal.Succeeded:
				heals = append(heals, r.Took)
			}
		}))
		cs := connectAll(t, sb, c, "echo", connections)
		tr := startTraffic(sb.Context(), t, cs, callTimeout)
		tr.waitCalls(10, sb.Timeout())

		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)) //nolint:gosec // which member to kill, not a secret
		kills := 0
		end := time.Now().Add(*soak)
		for time.Now().Before(end) {
			<-time.After(time.Duration(200+rng.IntN(300)) * time.Millisecond)
			victim := sb.Members()[fmt.Sprintf("m%d", rng.IntN(members)+1)]
			victim.Kill()
			kills++
			<-time.After(time.Duration(100+rng.IntN(200)) * time.Millisecond)
			victim.Restart()
		}
		sb.WaitMembers(fwd, "echo", members)
		tr.waitCalls(10, sb.Timeout()) // every connection healed and works
		calls, failures, wrong := tr.finish()
		retries := checkRetries(t, sb)
		if len(failures) > 0 || len(wrong) > 0 {
			t.Fatalf("%d calls; %d failed %v; %d answered wrong %v", calls, len(failures), failures, len(wrong), wrong)
		}
		for _, conn := range cs {
			if err := conn.Close(sb.Context()); err != nil {
				t.Fatal(err)
			}
		}
		fwd.WaitConnections(0)
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(heals)
		q := func(f float64) time.Duration {
			if len(heals) == 0 {
				return 0
			}
			return heals[min(int(f*float64(len(heals))), len(heals)-1)]
		}
		summary = fmt.Sprintf("soak: %v, %d kills, %d calls, %d heals (%d started), heal p50 %v p99 %v, %d retries marked, lost=0",
			*soak, kills, calls, len(heals), started, q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), retries)
	})
	if t.Failed() {
		return
	}
	fmt.Println(summary)
	// Everything the soak started is gone.
	deadline := time.After(10 * time.Second)
	for runtime.NumGoroutine() > goroutines || openFDs(t) > fds {
		select {
		case <-deadline:
			t.Fatalf("after the soak: %d goroutines (were %d), %d descriptors (were %d)", runtime.NumGoroutine(), goroutines, openFDs(t), fds)
		case <-time.After(50 * time.Millisecond): // goroutines end asynchronously; no event tells
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
