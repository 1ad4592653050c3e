package shm

import (
	"context"
	"io"
	"net"
	"testing"

	"go.uber.org/goleak"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

func TestMain(m *testing.M) {
	rdmatest.MaybeRunPeer(func(string) rdma.Provider { return New() })
	goleak.VerifyTestMain(m)
}

func rawDial(ctx context.Context, addr string) (handshake.Conn, io.Closer, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", addr)
	if err != nil {
		return nil, nil, err
	}
	return packetConn{nc.(*net.UnixConn)}, nc, nil
}

// TestConformance runs the suite with the peer in another process: the
// rings, the memfd and the eventfds really cross a process boundary.
func TestConformance(t *testing.T) {
	logs := rdmatest.NewLogRecorder()
	rdmatest.Run(t, rdmatest.Harness{
		Provider:  New(WithLogger(logs.Logger())),
		Logs:      logs,
		StartPeer: rdmatest.ProcessPeer(),
		RawDial:   rawDial,
	})
}
