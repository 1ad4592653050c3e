package tcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

// netnsPair is two network namespaces joined by a veth pair, created for a
// test and removed after it.
type netnsPair struct {
	a, b         string // namespace names
	addrA, addrB string // their addresses on the veth pair
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.CommandContext(context.Background(), "ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newNetnsPair(t *testing.T) *netnsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating network namespaces needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2's ip is not installed")
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	id := hex.EncodeToString(r[:3])
	n := &netnsPair{
		a:     "tether-a-" + id,
		b:     "tether-b-" + id,
		addrA: fmt.Sprintf("10.213.%d.1", r[3]),
		addrB: fmt.Sprintf("10.213.%d.2", r[3]),
	}
	if out, err := exec.CommandContext(context.Background(), "ip", "netns", "add", n.a).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.CommandContext(context.Background(), "ip", "netns", "del", n.a).Run() })
	ipCmd(t, "netns", "add", n.b)
	t.Cleanup(func() { _ = exec.CommandContext(context.Background(), "ip", "netns", "del", n.b).Run() })
	// The veth pair is created inside the namespaces: nothing touches the host's.
	ipCmd(t, "-n", n.a, "link", "add", "tva"+id, "type", "veth", "peer", "name", "tvb"+id, "netns", n.b)
	ipCmd(t, "-n", n.a, "addr", "add", n.addrA+"/30", "dev", "tva"+id)
	ipCmd(t, "-n", n.b, "addr", "add", n.addrB+"/30", "dev", "tvb"+id)
	for _, ns := range []struct{ name, dev string }{{n.a, "tva" + id}, {n.b, "tvb" + id}} {
		ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
		ipCmd(t, "-n", ns.name, "link", "set", ns.dev, "up")
	}
	return n
}

// inNetns runs fn on an OS thread that entered network namespace name;
// sockets fn creates belong to that namespace for their whole life. The
// namespace descriptors are closed before it returns, so that a leak check
// right after does not see them.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- enterAndRun(name, fn)
	}()
	return <-errc
}

// enterAndRun enters name on the locked thread, runs fn, and goes back; a
// thread that cannot go back stays locked and ends with its goroutine.
func enterAndRun(name string, fn func() error) error {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err = fn()
	if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return err
}

// TestConformanceNetns runs the suite across two network namespaces joined
// by a veth pair: the listener in one, the peer process in the other.
func TestConformanceNetns(t *testing.T) {
	ns := newNetnsPair(t)
	logs := rdmatest.NewLogRecorder()
	p := New(WithLogger(logs.Logger()))
	rdmatest.Run(t, rdmatest.Harness{
		Provider: p,
		Logs:     logs,
		Listen: func(ctx context.Context) (rdma.Listener, error) {
			var l rdma.Listener
			err := inNetns(ns.a, func() error {
				var err error
				l, err = p.Listen(ctx, ns.addrA+":0")
				return err
			})
			return l, err
		},
		StartPeer: rdmatest.ProcessPeer("ip", "netns", "exec", ns.b),
		RawDial: func(ctx context.Context, addr string) (handshake.Conn, io.Closer, error) {
			var nc net.Conn
			err := inNetns(ns.b, func() error {
				var d net.Dialer
				var err error
				nc, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			if err != nil {
				return nil, nil, err
			}
			return handshake.StreamConn{RW: nc}, nc, nil
		},
	})
}
