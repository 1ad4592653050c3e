package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
)

// ParseTarget reads a URL of the membership service: "unix:///path/to.sock"
// or "tcp://host:port". It returns the network and address to listen on or
// dial.
func ParseTarget(target string) (network, address string, err error) {
	u, err := url.Parse(target)
	if err != nil {
		return "", "", fmt.Errorf("membership target %q: %w", target, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || u.Path == "" {
			return "", "", fmt.Errorf("membership target %q: want unix:///absolute/path", target)
		}
		return "unix", u.Path, nil
	case "tcp":
		if u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return "", "", fmt.Errorf("membership target %q: want tcp://host:port", target)
		}
		return "tcp", u.Host, nil
	default:
		return "", "", fmt.Errorf("membership target %q: the scheme must be unix or tcp", target)
	}
}

// Listen listens on a target in the form ParseTarget reads. A unix socket
// file left behind by a process that died is replaced; a socket someone
// still listens on is not.
func Listen(ctx context.Context, target string) (net.Listener, error) {
	network, address, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, network, address)
	if err == nil || network != "unix" || !errors.Is(err, syscall.EADDRINUSE) {
		return lis, err
	}
	var d net.Dialer
	if c, dialErr := d.DialContext(ctx, "unix", address); dialErr == nil {
		_ = c.Close()
		return nil, err // somebody serves there
	}
	if fi, statErr := os.Lstat(address); statErr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	os.Remove(address)
	return lc.Listen(ctx, network, address)
}
