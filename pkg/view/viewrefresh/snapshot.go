package viewrefresh

import (
	"net"
	"net/url"

	"github.com/tether-mesh/tether/pkg/view"
)

// snapshot is a view as the Request path reads it: built once per view, read
// without locks and without allocation.
type snapshot struct {
	v view.View
	// id is v.ID as recorded on connections.
	id string
	// rank maps a member ID to its index in v.Members.
	rank map[string]int
	// urls holds each member's endpoint chain URL, by rank; nil for a member
	// without a usable one, which is never selected.
	urls []*url.URL
}

type memberKey struct {
	id          string
	incarnation uint64
}

// newSnapshot builds the snapshot of v, reusing the parsed URLs of prev's
// members that are still there.
func newSnapshot(v view.View, prev *snapshot) (s *snapshot, bad []string) {
	s = &snapshot{v: v, id: v.ID.String(), rank: make(map[string]int, len(v.Members)), urls: make([]*url.URL, len(v.Members))}
	for i, m := range v.Members {
		s.rank[m.ID] = i
		if prev != nil {
			if j, ok := prev.rank[m.ID]; ok && prev.v.Members[j].Incarnation == m.Incarnation {
				s.urls[i] = prev.urls[j] // nil again for a member reported before
				continue
			}
		}
		if u := endpointURL(m.Endpoints[view.EndpointGRPC]); u != nil {
			s.urls[i] = u
		} else {
			bad = append(bad, m.ID)
		}
	}
	return s, bad
}

// endpointURL parses a member's gRPC endpoint: unix:///path or
// tcp://host:port. It returns nil for anything else.
func endpointURL(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || u.Path == "" {
			return nil
		}
	case "tcp":
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || (u.Path != "" && u.Path != "/") {
			return nil
		}
	default:
		return nil
	}
	return u
}

// member returns the rank of the member called id when it has a URL.
func (s *snapshot) member(id string) (int, bool) {
	i, ok := s.rank[id]
	return i, ok && s.urls[i] != nil
}

// has reports whether the snapshot holds m, the same incarnation.
func (s *snapshot) has(m memberKey) bool {
	i, ok := s.rank[m.id]
	return ok && s.v.Members[i].Incarnation == m.incarnation
}
