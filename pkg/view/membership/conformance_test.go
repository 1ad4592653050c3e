package membership_test

import (
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/conformance"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/childproc"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

func TestMain(m *testing.M) {
	childproc.Main(viewtest.Roles)
	logrus.SetLevel(logrus.WarnLevel)
	goleak.VerifyTestMain(m)
	os.Exit(0)
}

// Leases run in real time here: healthy members heartbeat every 100 ms and
// keep a lease of 2 s, a margin that a loaded machine under the race
// detector does not eat; hung members never heartbeat.
const (
	heartbeat = 100 * time.Millisecond
	lease     = 2 * time.Second
	wait      = 15 * time.Second
)

func backend(t *testing.T, target string) conformance.Backend {
	return conformance.Backend{
		Provider: viewtest.Dial(t, target),
		Reconnect: func(t *testing.T) (view.Provider, func()) {
			c, err := membership.Dial(target)
			if err != nil {
				t.Fatal(err)
			}
			return c, func() { _ = c.Close() }
		},
		Hung: viewtest.Dial(t, target, membership.WithHeartbeatInterval(time.Hour)),
		Wait: wait,
		Spawn: func(t *testing.T, group string, m view.Member) func() {
			return viewtest.SpawnMember(t, target, group, m).Kill
		},
		KillIsFailure: true,
	}
}

// TestConformanceSameProcess runs the suite against a client of a server in
// this process.
func TestConformanceSameProcess(t *testing.T) {
	conformance.Run(t, func(t *testing.T) conformance.Backend {
		p := embedded.New(embedded.WithLease(heartbeat, lease))
		t.Cleanup(func() { _ = p.Close() })
		return backend(t, viewtest.Serve(t, p))
	})
}

// TestConformanceOtherProcess runs the suite against a client of a server
// in a child process.
func TestConformanceOtherProcess(t *testing.T) {
	conformance.Run(t, func(t *testing.T) conformance.Backend {
		_, target := viewtest.ServerProcess(t, heartbeat, lease)
		return backend(t, target)
	})
}
