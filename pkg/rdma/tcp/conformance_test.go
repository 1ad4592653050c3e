package tcp

import (
	"context"
	"io"
	"net"
	"os"
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
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return handshake.StreamConn{RW: nc}, nc, nil
}

// TestConformance runs the suite on loopback, with the peer in another
// process.
func TestConformance(t *testing.T) {
	logs := rdmatest.NewLogRecorder()
	rdmatest.Run(t, rdmatest.Harness{
		Provider:   New(WithLogger(logs.Logger())),
		Logs:       logs,
		ListenAddr: "127.0.0.1:0",
		StartPeer:  rdmatest.ProcessPeer(),
		RawDial:    rawDial,
	})
}

var _ = os.Getenv
