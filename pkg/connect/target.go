package connect

import (
	"fmt"
	"net/url"
	"strings"
)

// target turns a next-hop URL into a gRPC dial target: unix:///path for a
// unix socket, passthrough:///host:port for TCP.
func target(u *url.URL) (string, error) {
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		if path == "" {
			return "", fmt.Errorf("unix URL %q has no path", u)
		}
		if strings.HasPrefix(path, "/") {
			return "unix://" + path, nil
		}
		return "unix:" + path, nil
	case "tcp":
		if u.Host == "" || u.Port() == "" {
			return "", fmt.Errorf("tcp URL %q needs host:port", u)
		}
		return "passthrough:///" + u.Host, nil
	default:
		return "", fmt.Errorf("URL %q: scheme must be unix or tcp", u)
	}
}
