package viewrefresh

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SelectorLabel is the label of Connection.Labels that restricts the members
// a connection may go to: a comma-separated list of key=value pairs, all of
// which a member's labels must hold ("zone=a,role=replica"). Spaces around
// keys and values are ignored.
const SelectorLabel = "tether.selector"

// checkSelector returns an InvalidArgument status when sel is malformed.
func checkSelector(sel string) error {
	for rest := sel; ; {
		var pair string
		pair, rest, _ = strings.Cut(rest, ",")
		k, _, ok := strings.Cut(pair, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return status.Errorf(codes.InvalidArgument, "label %s = %q: want key=value pairs separated by commas", SelectorLabel, sel)
		}
		if rest == "" {
			return nil
		}
	}
}

// matches reports whether labels hold every pair of the well-formed sel.
// It allocates nothing.
func matches(sel string, labels map[string]string) bool {
	for rest := sel; ; {
		var pair string
		pair, rest, _ = strings.Cut(rest, ",")
		k, v, _ := strings.Cut(pair, "=")
		if got, ok := labels[strings.TrimSpace(k)]; !ok || got != strings.TrimSpace(v) {
			return false
		}
		if rest == "" {
			return true
		}
	}
}
