package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/sandbox"
)

// traffic makes sequenced calls on connections until stopped, and checks
// every answer.
type traffic struct {
	t     *testing.T
	conns []*client.Conn
	stop  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	calls    []int // answered calls per connection
	failures []string
	wrong    []string
	progress chan struct{} // closed and replaced at every answered call
}

// startTraffic starts one caller per connection; each call has callTimeout.
func startTraffic(ctx context.Context, t *testing.T, conns []*client.Conn, callTimeout time.Duration) *traffic {
	tr := &traffic{t: t, conns: conns, stop: make(chan struct{}), calls: make([]int, len(conns)), progress: make(chan struct{})}
	for i, conn := range conns {
		tr.wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				payload := fmt.Sprintf("%s %d", conn.ID(), seq)
				callCtx, cancel := context.WithTimeout(ctx, callTimeout)
				reply, err := conn.Call(callCtx, []byte(payload))
				cancel()
				tr.mu.Lock()
				switch {
				case err != nil:
					tr.failures = append(tr.failures, fmt.Sprintf("%s: %v", payload, err))
				case string(reply) != payload:
					tr.wrong = append(tr.wrong, fmt.Sprintf("%s answered %q", payload, reply))
				default:
					tr.calls[i]++
					close(tr.progress)
					tr.progress = make(chan struct{})
				}
				tr.mu.Unlock()
			}
		})
	}
	return tr
}

// waitCalls waits until every connection has n more answered calls than now.
func (tr *traffic) waitCalls(n int, timeout time.Duration) {
	tr.t.Helper()
	tr.mu.Lock()
	target := make([]int, len(tr.calls))
	for i, c := range tr.calls {
		target[i] = c + n
	}
	tr.mu.Unlock()
	deadline := time.After(timeout)
	for {
		tr.mu.Lock()
		done := true
		for i, c := range tr.calls {
			if c < target[i] {
				done = false
			}
		}
		progress := tr.progress
		tr.mu.Unlock()
		if done {
			return
		}
		select {
		case <-progress:
		case <-deadline:
			tr.mu.Lock()
			defer tr.mu.Unlock()
			tr.t.Fatalf("connections stalled: answered %v, want %v; failures %v", tr.calls, target, tr.failures)
		}
	}
}

// finish stops the traffic and returns what went wrong.
func (tr *traffic) finish() (calls int, failures, wrong []string) {
	close(tr.stop)
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range tr.calls {
		calls += c
	}
	return calls, tr.failures, tr.wrong
}

// checkRetries fails the test if a member saw a call twice without the
// retry mark on every sighting but one.
func checkRetries(t *testing.T, sb *sandbox.Sandbox) (retries int) {
	t.Helper()
	unmarked := map[string]int{}
	for _, m := range sb.Members() {
		for _, tr := range m.Traces() {
			if tr.Retry {
				retries++
				continue
			}
			unmarked[tr.Payload]++
		}
	}
	var dups []string
	for p, n := range unmarked {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%q×%d", p, n))
		}
	}
	if len(dups) > 0 {
		t.Fatalf("calls handled more than once without the retry mark: %s", strings.Join(dups, ", "))
	}
	return retries
}

// connectAll opens n connections to group.
func connectAll(t *testing.T, sb *sandbox.Sandbox, c *client.Client, group string, n int) []*client.Conn {
	t.Helper()
	conns := make([]*client.Conn, n)
	for i := range conns {
		conn, err := c.Connect(sb.Context(), group)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = conn
	}
	return conns
}
