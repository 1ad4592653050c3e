package sockurl_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-mesh/tether/pkg/sockurl"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw, network, address, target, err string
	}{
		{raw: "unix:///run/t.sock", network: "unix", address: "/run/t.sock", target: "unix:///run/t.sock"},
		{raw: "tcp://127.0.0.1:5000", network: "tcp", address: "127.0.0.1:5000", target: "passthrough:///127.0.0.1:5000"},
		{raw: "tcp://[::1]:5000/", network: "tcp", address: "[::1]:5000", target: "passthrough:///[::1]:5000"},
		{raw: "unix://host/run/t.sock", err: "want unix:///absolute/path"},
		{raw: "unix:relative.sock", err: "want unix:///absolute/path"},
		{raw: "tcp://host", err: "want tcp://host:port"},
		{raw: "tcp://host:1/path", err: "want tcp://host:port"},
		{raw: "http://x:1", err: "the scheme must be unix or tcp"},
		{raw: "%", err: "invalid URL escape"},
	}
	for _, tt := range tests {
		network, address, err := sockurl.Parse(tt.raw)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.raw, err, tt.err)
			}
			continue
		}
		if err != nil || network != tt.network || address != tt.address {
			t.Errorf("%s: %s %s %v", tt.raw, network, address, err)
		}
		u, _ := url.Parse(tt.raw)
		if target, err := sockurl.GRPCTarget(u); err != nil || target != tt.target {
			t.Errorf("%s: target %s %v, want %s", tt.raw, target, err, tt.target)
		}
	}
}

func TestListenUnix(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "a.sock")
	ctx := context.Background()
	tests := []struct {
		mode, want os.FileMode
	}{{0, 0o600}, {0o660, 0o660}}
	for _, tt := range tests {
		lis, err := sockurl.Listen(ctx, "unix://"+path, tt.mode)
		if err != nil {
			t.Fatal(err)
		}
		if lis.Addr().String() != path {
			t.Fatalf("Addr %s, want %s", lis.Addr(), path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tt.want || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket mode %v, want %v", fi.Mode(), tt.want)
		}
		// A second listener on a live socket is refused.
		if _, err := sockurl.Listen(ctx, "unix://"+path, 0); !errors.Is(err, sockurl.ErrInUse) {
			t.Fatalf("listened twice on a live socket: %v", err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if err := lis.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("the socket file stays after Close: %v", err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("left in the directory: %v", entries)
	}
}

func TestListenReplacesADeadSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dead.sock")
	// A socket file nobody serves on, as a killed process leaves it.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()
	lis, err := sockurl.Listen(context.Background(), "unix://"+path, 0)
	if err != nil {
		t.Fatalf("a dead socket was not replaced: %v", err)
	}
	_ = lis.Close()
	// A regular file is never removed.
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sockurl.Listen(context.Background(), "unix://"+path, 0); !errors.Is(err, sockurl.ErrNotSocket) {
		t.Fatalf("a regular file was replaced by a socket: %v", err)
	}
}

func TestListenTCP(t *testing.T) {
	t.Parallel()
	lis, err := sockurl.Listen(context.Background(), "tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = lis.Close()
}
