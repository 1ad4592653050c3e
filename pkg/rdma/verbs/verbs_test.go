//go:build rdmaverbs && cgo

package verbs

import (
	"context"
	"errors"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

func TestMain(m *testing.M) {
	rdmatest.MaybeRunPeer(func(string) rdma.Provider { return New() })
	goleak.VerifyTestMain(m)
}

// envAddr names the variable with the address to listen on: an IP address
// of an RDMA-capable interface (port 0 picks one), for example
// TETHER_VERBS_ADDR=192.168.100.1:0.
const envAddr = "TETHER_VERBS_ADDR"

func requireDevice(t *testing.T) string {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: %v (this machine has no RDMA device; the verbs provider was built and vetted)", err)
	}
	addr := os.Getenv(envAddr)
	if addr == "" {
		t.Skipf("skipping: set %s to an address of an RDMA-capable interface, e.g. 192.168.100.1:0", envAddr)
	}
	return addr
}

// TestConformance runs the suite over RDMA hardware, with the peer in
// another process.
func TestConformance(t *testing.T) {
	addr := requireDevice(t)
	logs := rdmatest.NewLogRecorder()
	rdmatest.Run(t, rdmatest.Harness{
		Provider:   New(WithLogger(logs.Logger())),
		Logs:       logs,
		ListenAddr: addr,
		StartPeer:  rdmatest.ProcessPeer(),
		// No raw dialer: the replay test needs a byte transport; the
		// handshake's replay resistance is tested on its own.
	})
}

func TestNoDeviceIsReported(t *testing.T) {
	if deviceCount() > 0 {
		t.Skip("skipping: this machine has an RDMA device")
	}
	if !errors.Is(Available(), ErrNoDevice) {
		t.Errorf("Available() = %v", Available())
	}
	if _, err := New().Listen(context.Background(), "127.0.0.1:0"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Listen without a device: %v", err)
	}
	if _, err := New().Dial(context.Background(), "127.0.0.1:1", "x", rdma.NewSecret()); !errors.Is(err, ErrNoDevice) || !errors.Is(err, rdma.ErrUnreachable) {
		t.Errorf("Dial without a device: %v", err)
	}
}
