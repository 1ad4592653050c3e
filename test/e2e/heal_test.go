package e2e

import (
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/heal"
	"github.com/tether-mesh/tether/pkg/sandbox"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

const (
	conns       = 8
	callTimeout = 5 * time.Second
)

// healTopology starts a forwarder and members m1..mN of "echo" and a client
// with conns connections.
func healTopology(t *testing.T, provider string, members int, opts ...sandbox.ForwarderOption) (*sandbox.Sandbox, *sandbox.Forwarder, *client.Client, []*client.Conn) {
	t.Helper()
	var sbOpts []sandbox.Option
	if os.Getenv("E2E_DEBUG") != "" {
		dbg := logrus.New()
		dbg.SetLevel(logrus.DebugLevel)
		sbOpts = append(sbOpts, sandbox.WithLogger(logrus.NewEntry(dbg)))
	}
	sb := sandbox.New(t, sbOpts...)
	fwd := sb.Forwarder(opts...)
	for i := range members {
		sb.Member(fwd, "echo", "m"+string(rune('1'+i)), sandbox.WithChannels(provider))
	}
	sb.WaitMembers(fwd, "echo", members)
	p := map[string]func() client.Option{}
	for _, pr := range providers {
		p[pr.name] = func() client.Option { return client.WithProviders(pr.make()) }
	}
	c := sb.Client(fwd, p[provider]())
	return sb, fwd, c, connectAll(t, sb, c, "echo", conns)
}

// on returns the connections bound to member id.
func on(cs []*client.Conn, id string) []*client.Conn {
	var out []*client.Conn
	for _, c := range cs {
		if c.Member() == id {
			out = append(out, c)
		}
	}
	return out
}

// assertClean fails on failed or wrong calls and unmarked duplicates.
func assertClean(t *testing.T, sb *sandbox.Sandbox, tr *traffic) {
	t.Helper()
	calls, failures, wrong := tr.finish()
	if len(failures) > 0 {
		for _, f := range failures {
			payload, _, _ := strings.Cut(f, ":")
			for _, m := range sb.Members() {
				for _, trc := range m.Traces() {
					if trc.Payload == payload {
						t.Logf("failed call %q was handled by %s (retry %v)", payload, m.ID(), trc.Retry)
					}
				}
			}
		}
	}
	if len(failures) > 0 || len(wrong) > 0 {
		t.Fatalf("%d calls answered; %d failed %v; %d wrong %v", calls, len(failures), failures, len(wrong), wrong)
	}
	retries := checkRetries(t, sb)
	t.Logf("%d calls, %d retries handled, none lost", calls, retries)
}

func TestHealMemberKilledDuringTraffic(t *testing.T) {
	for _, p := range []string{"shm", "tcp"} {
		t.Run(p, func(t *testing.T) {
			sb, _, _, cs := healTopology(t, p, 3)
			tr := startTraffic(sb.Context(), t, cs, callTimeout)
			tr.waitCalls(20, sb.Timeout())
			victim := cs[0].Member()
			moving := on(cs, victim)
			sb.Members()[victim].Kill()
			tr.waitCalls(20, sb.Timeout())
			for _, c := range moving {
				if c.Member() == victim || c.Stats().Heals == 0 {
					t.Fatalf("connection %s still on %s after %d heals", c.ID(), c.Member(), c.Stats().Heals)
				}
			}
			assertClean(t, sb, tr)
		})
	}
}

func TestHealMemberLeavesGracefully(t *testing.T) {
	sb, _, _, cs := healTopology(t, "tcp", 3)
	tr := startTraffic(sb.Context(), t, cs, callTimeout)
	tr.waitCalls(10, sb.Timeout())
	victim := cs[0].Member()
	moving := on(cs, victim)
	sb.Members()[victim].Stop()
	tr.waitCalls(10, sb.Timeout())
	for _, c := range moving {
		if c.Member() == victim {
			t.Fatalf("connection %s still on %s", c.ID(), victim)
		}
	}
	assertClean(t, sb, tr)
}

func TestHealTwoMembersKilledAtOnce(t *testing.T) {
	sb, _, _, cs := healTopology(t, "shm", 3)
	tr := startTraffic(sb.Context(), t, cs, callTimeout)
	tr.waitCalls(10, sb.Timeout())
	var wg sync.WaitGroup
	for _, id := range []string{"m1", "m2"} {
		wg.Go(sb.Members()[id].Kill)
	}
	wg.Wait()
	tr.waitCalls(10, sb.Timeout())
	for _, c := range cs {
		if c.Member() != "m3" {
			t.Fatalf("connection %s on %s, want the survivor m3", c.ID(), c.Member())
		}
	}
	assertClean(t, sb, tr)
}

func TestHealForwarderKilledAndRestarted(t *testing.T) {
	sb, fwd, _, cs := healTopology(t, "shm", 3)

	tr := startTraffic(sb.Context(), t, cs, callTimeout)
	tr.waitCalls(10, sb.Timeout())
	binds := map[string]int{}
	for _, c := range cs {
		binds[c.ID()] = c.Stats().Binds
	}
	fwd.Kill()
	// Channels do not pass through the forwarder: calls go on.
	tr.waitCalls(20, sb.Timeout())
	fwd.Restart()
	sb.WaitMembers(fwd, "echo", 3) // members join the new forwarder
	fwd.WaitConnections(conns)     // connections refresh into it
	tr.waitCalls(10, sb.Timeout())
	for _, c := range cs {
		if c.Stats().Binds != binds[c.ID()] {
			t.Fatalf("connection %s rebound its channel (%d binds, was %d) though its member lived", c.ID(), c.Stats().Binds, binds[c.ID()])
		}
	}
	assertClean(t, sb, tr)
}

func TestHealKillDuringHeal(t *testing.T) {
	sb := sandbox.New(t)
	fwd := sb.Forwarder(sandbox.WithPolicy(viewrefresh.Primary)) // every connection on the oldest member
	for _, id := range []string{"m1", "m2", "m3"} {
		sb.Member(fwd, "echo", id, sandbox.WithChannels("tcp"))
	}
	sb.WaitMembers(fwd, "echo", 3)
	started := make(chan struct{}, conns)
	c := sb.Client(fwd, client.WithProviders(providers[2].make()), client.WithHealObserver(func(r heal.Report) {
		if r.Kind == heal.Started {
			select {
			case started <- struct{}{}:
			default:
			}
		}
	}))
	cs := connectAll(t, sb, c, "echo", conns)
	tr := startTraffic(sb.Context(), t, cs, callTimeout)
	tr.waitCalls(10, sb.Timeout())
	sb.Members()["m1"].Kill()
	select {
	case <-started:
	case <-time.After(sb.Timeout()):
		t.Fatal("no heal started")
	}
	sb.Members()["m2"].Kill() // the member the heals go to next
	tr.waitCalls(10, sb.Timeout())
	for _, conn := range cs {
		if conn.Member() != "m3" {
			t.Fatalf("connection %s on %s, want m3", conn.ID(), conn.Member())
		}
	}
	assertClean(t, sb, tr)
}

func TestHealCloseDuringHeal(t *testing.T) {
	var mu sync.Mutex
	var reports []heal.Report
	sb := sandbox.New(t)
	fwd := sb.Forwarder()
	sb.Member(fwd, "echo", "m1", sandbox.WithChannels("tcp"))
	sb.WaitMembers(fwd, "echo", 1)
	c := sb.Client(fwd, client.WithProviders(providers[2].make()), client.WithHealBackoff(heal.Backoff{First: 20 * time.Millisecond, Max: 50 * time.Millisecond}),
		client.WithHealObserver(func(r heal.Report) {
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
		}))
	conn, err := c.Connect(sb.Context(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	sb.Members()["m1"].Kill() // nowhere to heal to: attempts keep failing
	deadline := time.After(sb.Timeout())
	for {
		mu.Lock()
		failed := 0
		for _, r := range reports {
			if r.Kind == heal.Failed {
				failed++
			}
		}
		mu.Unlock()
		if failed >= 2 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the heal never failed twice")
		case <-time.After(10 * time.Millisecond): // polls the reports; the observer must not block
		}
	}
	if err := conn.Close(sb.Context()); err != nil {
		t.Logf("close of a connection without a member: %v", err)
	}
	mu.Lock()
	n := len(reports)
	mu.Unlock()
	// A bounded look for a wrong event: no attempt after Close, though the
	// back-off would have made several.
	<-time.After(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != n {
		t.Fatalf("heal went on after Close: %v", reports[n:])
	}
	if fwd.Connections() != 0 {
		t.Fatalf("the forwarder holds %d connections", fwd.Connections())
	}
}

func TestHealKillDuringClose(t *testing.T) {
	sb, fwd, _, cs := healTopology(t, "tcp", 3)
	victim := cs[0].Member()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { _ = c.Close(sb.Context()) })
	}
	sb.Members()[victim].Kill()
	wg.Wait()
	fwd.WaitConnections(0)
	for id, m := range sb.Members() {
		if id != victim {
			m.WaitConnections(0)
		}
	}
}

func TestHealEveryMemberKilled(t *testing.T) {
	sb, _, _, cs := healTopology(t, "tcp", 2)
	for _, m := range sb.Members() {
		m.Kill()
	}
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	ctx, cancel := context.WithTimeout(sb.Context(), 2*time.Second)
	defer cancel()
	_, err := cs[0].Call(ctx, []byte("anyone?"))
	wall := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if err == nil || !strings.Contains(err.Error(), "down and healing") {
		t.Fatalf("a call with no member left: %v, want a clear error", err)
	}
	t.Logf("error: %v", err)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	if share := float64(cpu) / float64(wall); share > 0.25 {
		t.Fatalf("waiting for a member cost %.0f%% of a core (%v in %v): a busy loop", 100*share, cpu, wall)
	} else {
		t.Logf("waiting cost %.1f%% of a core", 100*share)
	}
}

func TestHealPartitionedMember(t *testing.T) {
	const heartbeat, lease = 50 * time.Millisecond, 250 * time.Millisecond
	kinds := []struct {
		name string
		opt  sandbox.MemberOption
	}{
		{"netns", sandbox.Partitionable()},
		{"proxy", sandbox.PartitionByProxy()},
	}
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			if kind.name == "netns" && !sandbox.NetnsAvailable() {
				t.Skip("partitions in network namespaces need root and the ip and tc commands; the proxy variant runs instead")
			}
			sb := sandbox.New(t)
			fwd := sb.Forwarder(sandbox.WithLease(heartbeat, lease))
			for _, id := range []string{"m1", "m2", "m3"} {
				if m := sb.Member(fwd, "echo", id, kind.opt); m.PartitionKind() != kind.name {
					t.Fatalf("member partitions by %q, want %q", m.PartitionKind(), kind.name)
				}
			}
			sb.WaitMembers(fwd, "echo", 3)
			c := sb.Client(fwd, client.WithProviders(providers[2].make()))
			cs := connectAll(t, sb, c, "echo", conns)
			tr := startTraffic(sb.Context(), t, cs, callTimeout)
			tr.waitCalls(10, sb.Timeout())
			victim := cs[0].Member()
			moving := on(cs, victim)
			sb.Members()[victim].Partition()
			// No reset reaches anyone: the forwarder learns from the missed
			// heartbeats, removes the member after its lease, and moves its
			// connections; their calls in flight are answered by the new
			// member.
			tr.waitCalls(10, sb.Timeout())
			for _, conn := range moving {
				if conn.Member() == victim {
					t.Fatalf("connection %s still on the partitioned %s", conn.ID(), victim)
				}
			}
			sb.Members()[victim].Heal()
			sb.WaitMembers(fwd, "echo", 3) // it joins again once it hears it was dropped
			assertClean(t, sb, tr)
		})
	}
}
