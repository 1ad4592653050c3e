package etcd

import (
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
)

// keys names the provider's keys under a prefix.
type keys struct {
	prefix string
}

func (k keys) epoch() string { return k.prefix + "epoch" }

func (k keys) group(group string) string { return k.prefix + "groups/" + url.PathEscape(group) }

func (k keys) members(group string) string {
	return k.prefix + "members/" + url.PathEscape(group) + "/"
}

func (k keys) member(group, id string) string { return k.members(group) + url.PathEscape(id) }

// memberID decodes the member ID of a key under members(group). It refuses
// what the provider would not have written: another group, an empty,
// non-canonical or invalid name, or a nested path.
func (k keys) memberID(group string, key []byte, l view.Limits) (string, error) {
	escaped, ok := strings.CutPrefix(string(key), k.members(group))
	if !ok || escaped == "" || strings.Contains(escaped, "/") {
		return "", status.Errorf(codes.InvalidArgument, "key %q is not a member of group %q", key, group)
	}
	id, err := url.PathUnescape(escaped)
	if err != nil || url.PathEscape(id) != escaped {
		return "", status.Errorf(codes.InvalidArgument, "key %q does not name a member in canonical form", key)
	}
	if err := l.CheckMemberID(id); err != nil {
		return "", err
	}
	return id, nil
}
