// Package sockurl reads the URLs tether listens on and dials: unix:///path
// for a unix socket, tcp://host:port for TCP. It opens listeners with the
// socket's file mode set before anyone can connect, replaces a socket file a
// dead process left behind, and gives the target gRPC dials.
package sockurl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrInUse is wrapped by Listen's error when another process serves on the
// unix socket, and ErrNotSocket when a file that is not a socket is in the
// way.
var (
	ErrInUse     = errors.New("another process serves there")
	ErrNotSocket = errors.New("a file that is not a socket is in the way")
)

// DefaultMode is the mode of the unix sockets tether creates: only their
// owner may connect.
const DefaultMode os.FileMode = 0o600

// Parse reads a URL, "unix:///absolute/path" or "tcp://host:port", and
// returns the network and address to listen on or dial.
func Parse(raw string) (network, address string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("URL %q: %w", raw, err)
	}
	return FromURL(u)
}

// FromURL is Parse for a parsed URL.
func FromURL(u *url.URL) (network, address string, err error) {
	switch u.Scheme {
	case "unix":
		if u.Host != "" || u.Path == "" || !filepath.IsAbs(u.Path) {
			return "", "", fmt.Errorf("URL %q: want unix:///absolute/path", u)
		}
		return "unix", u.Path, nil
	case "tcp":
		if u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return "", "", fmt.Errorf("URL %q: want tcp://host:port", u)
		}
		return "tcp", u.Host, nil
	default:
		return "", "", fmt.Errorf("URL %q: the scheme must be unix or tcp", u)
	}
}

// GRPCTarget returns the target grpc.NewClient dials for a URL.
func GRPCTarget(u *url.URL) (string, error) {
	network, address, err := FromURL(u)
	if err != nil {
		return "", err
	}
	if network == "unix" {
		return "unix://" + address, nil
	}
	return "passthrough:///" + address, nil
}

// Listen listens on raw. A unix socket gets mode (DefaultMode when zero)
// before it accepts anyone; a socket file left behind by a process that
// died is replaced, one that somebody still serves on is not.
func Listen(ctx context.Context, raw string, mode os.FileMode) (net.Listener, error) {
	network, address, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		var lc net.ListenConfig
		return lc.Listen(ctx, network, address)
	}
	if mode == 0 {
		mode = DefaultMode
	}
	lis, err := listenUnix(ctx, address, mode)
	if err == nil || !errors.Is(err, syscall.EEXIST) {
		return lis, err
	}
	var d net.Dialer
	if c, dialErr := d.DialContext(ctx, "unix", address); dialErr == nil {
		_ = c.Close()
		return nil, fmt.Errorf("listen %s: %w", raw, ErrInUse)
	}
	if fi, statErr := os.Lstat(address); statErr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("listen %s: %w", raw, ErrNotSocket)
	}
	if err := os.Remove(address); err != nil {
		return nil, err
	}
	return listenUnix(ctx, address, mode)
}

// listenUnix binds the socket in a directory only its owner can enter,
// sets its mode, and only then moves it to path: there is no moment at which
// another user could connect to it.
func listenUnix(ctx context.Context, path string, mode os.FileMode) (net.Listener, error) {
	private, err := os.MkdirTemp(filepath.Dir(path), ".s")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "unix", tmp)
	if err != nil {
		return nil, err
	}
	ul := lis.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // it is bound to tmp; Close removes path below
	if err := os.Chmod(tmp, mode); err != nil {
		_ = ul.Close()
		return nil, err
	}
	// Move it into place, but never over an existing file (EEXIST).
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		_ = ul.Close()
		return nil, &os.LinkError{Op: "rename", Old: tmp, New: path, Err: err}
	}
	return &unixListener{UnixListener: ul, path: path}, nil
}

// unixListener removes its socket file when it closes.
type unixListener struct {
	*net.UnixListener
	path string
}

// Addr returns the socket's path (the one it was moved to).
func (l *unixListener) Addr() net.Addr {
	return &net.UnixAddr{Name: l.path, Net: "unix"}
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if rmErr := os.Remove(l.path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && err == nil {
		err = rmErr
	}
	return err
}
