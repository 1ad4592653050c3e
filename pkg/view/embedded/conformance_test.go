package embedded_test

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
	"github.com/tether-mesh/tether/pkg/view/internal/fakeclock"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
)

func TestMain(m *testing.M) {
	childproc.Main(viewtest.Roles)
	logrus.SetLevel(logrus.WarnLevel)
	goleak.VerifyTestMain(m)
	os.Exit(0)
}

const (
	heartbeat = 100 * time.Millisecond
	lease     = 500 * time.Millisecond
)

func newProvider(t testing.TB) (*embedded.Provider, *fakeclock.Clock) {
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	p := embedded.New(embedded.WithClock(clock), embedded.WithLease(heartbeat, lease))
	t.Cleanup(func() { _ = p.Close() })
	return p, clock
}

// TestConformance runs the suite against the embedded provider on a fake
// clock. Members in other processes join it through the membership service,
// as they do in the forwarder.
func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) conformance.Backend {
		p, clock := newProvider(t)
		target := viewtest.Serve(t, p)
		return conformance.Backend{
			Provider:  p,
			Reconnect: func(*testing.T) (view.Provider, func()) { return p, func() {} },
			Hung:      viewtest.LeaseJoiner{Provider: p},
			Expire:    func() { clock.Advance(lease) },
			Wait:      10 * time.Second,
			Spawn: func(t *testing.T, group string, m view.Member) func() {
				return viewtest.SpawnMember(t, target, group, m).Kill
			},
			KillIsFailure: true,
		}
	})
}
