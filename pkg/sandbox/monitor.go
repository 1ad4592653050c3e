package sandbox

import (
	"context"
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tether-mesh/tether/pkg/sockurl"
)

// waitConnections follows the monitor service at url until it reports n
// connections, or ctx ends.
func waitConnections(ctx context.Context, url string, n int) error {
	cc, err := grpc.NewClient(url, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	stream, err := networkservice.NewMonitorConnectionClient(cc).MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	if err != nil {
		return err
	}
	conns := map[string]bool{}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("%d connections at %s, want %d: %w", len(conns), url, n, err)
		}
		for id := range ev.GetConnections() {
			switch ev.GetType() {
			case networkservice.ConnectionEventType_DELETE:
				delete(conns, id)
			default:
				conns[id] = true
			}
		}
		if len(conns) == n {
			return nil
		}
	}
}

// WaitConnections waits until the forwarder holds n connections, as its
// monitor reports them.
func (f *Forwarder) WaitConnections(n int) {
	f.s.t.Helper()
	ctx, cancel := context.WithTimeout(f.s.ctx, f.s.timeout)
	defer cancel()
	if err := waitConnections(ctx, f.URL(), n); err != nil { // unix://path dials as is
		f.s.t.Fatalf("sandbox: forwarder %s: %v", f.name, err)
	}
}

// WaitConnections waits until the member holds n connections, as its
// monitor reports them.
func (m *Member) WaitConnections(n int) {
	m.s.t.Helper()
	ctx, cancel := context.WithTimeout(m.s.ctx, m.s.timeout)
	defer cancel()
	target, err := sockurl.GRPCTarget(mustParse(m.direct()))
	if err != nil {
		m.s.t.Fatal(err)
	}
	if err := waitConnections(ctx, target, n); err != nil {
		m.s.t.Fatalf("sandbox: member %s: %v", m.id, err)
	}
}
