package view

import (
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits bound what a member may carry and what a view may hold, so that no
// peer can make a provider or an observer hold much memory. Providers check
// every member they are given or decode against them.
type Limits struct {
	// MaxNameBytes bounds a group name and a member ID.
	MaxNameBytes int
	// MaxEndpoints and MaxLabels bound the entries of a member's endpoints
	// and labels; MaxKeyBytes and MaxValueBytes bound each entry.
	MaxEndpoints  int
	MaxLabels     int
	MaxKeyBytes   int
	MaxValueBytes int
	// MaxDataBytes bounds a member's offered data.
	MaxDataBytes int
	// MaxMembers bounds the members of one view.
	MaxMembers int
}

// DefaultLimits are the limits providers apply unless told otherwise.
var DefaultLimits = Limits{
	MaxNameBytes:  253,
	MaxEndpoints:  16,
	MaxLabels:     64,
	MaxKeyBytes:   256,
	MaxValueBytes: 1024,
	MaxDataBytes:  16 << 10,
	MaxMembers:    4096,
}

// CheckGroup returns nil when group can name a group: not empty, valid UTF-8
// without control characters, at most MaxNameBytes long. Otherwise it returns
// an InvalidArgument status.
func (l Limits) CheckGroup(group string) error {
	return l.checkName("group", group)
}

// CheckMemberID returns nil when id can name a member, under the rules of
// CheckGroup.
func (l Limits) CheckMemberID(id string) error {
	return l.checkName("member ID", id)
}

// CheckMember returns nil when m is within l, and otherwise an
// InvalidArgument status that names the first thing wrong.
func (l Limits) CheckMember(m Member) error {
	if err := l.CheckMemberID(m.ID); err != nil {
		return err
	}
	if err := l.checkEntries(m.ID, "endpoints", m.Endpoints, l.MaxEndpoints); err != nil {
		return err
	}
	if err := l.checkEntries(m.ID, "labels", m.Labels, l.MaxLabels); err != nil {
		return err
	}
	if len(m.Data) > l.MaxDataBytes {
		return status.Errorf(codes.InvalidArgument, "member %q offers %d bytes of data, more than the limit of %d", m.ID, len(m.Data), l.MaxDataBytes)
	}
	return nil
}

// CheckView returns nil when v is a view l allows: a valid group, at most
// MaxMembers members, each valid and with a distinct ID, and the same for
// Joined and Left.
func (l Limits) CheckView(v View) error {
	if err := l.CheckGroup(v.Group); err != nil {
		return err
	}
	for _, list := range []struct {
		name    string
		members []Member
	}{{"members", v.Members}, {"joined", v.Joined}, {"left", v.Left}} {
		if len(list.members) > l.MaxMembers {
			return status.Errorf(codes.InvalidArgument, "view %s of group %q has %d %s, more than the limit of %d", v.ID, v.Group, len(list.members), list.name, l.MaxMembers)
		}
		seen := make(map[string]struct{}, len(list.members))
		for _, m := range list.members {
			if err := l.CheckMember(m); err != nil {
				return err
			}
			if _, dup := seen[m.ID]; dup {
				return status.Errorf(codes.InvalidArgument, "view %s of group %q lists member %q twice in %s", v.ID, v.Group, m.ID, list.name)
			}
			seen[m.ID] = struct{}{}
		}
	}
	return nil
}

func (l Limits) checkName(what, name string) error {
	switch {
	case name == "":
		return status.Errorf(codes.InvalidArgument, "%s is empty", what)
	case len(name) > l.MaxNameBytes:
		return status.Errorf(codes.InvalidArgument, "%s is %d bytes, more than the limit of %d", what, len(name), l.MaxNameBytes)
	case !utf8.ValidString(name):
		return status.Errorf(codes.InvalidArgument, "%s %q is not valid UTF-8", what, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return status.Errorf(codes.InvalidArgument, "%s %q contains a control character", what, name)
		}
	}
	return nil
}

func (l Limits) checkEntries(member, what string, m map[string]string, maxEntries int) error {
	if len(m) > maxEntries {
		return status.Errorf(codes.InvalidArgument, "member %q has %d %s, more than the limit of %d", member, len(m), what, maxEntries)
	}
	for k, v := range m {
		switch {
		case k == "":
			return status.Errorf(codes.InvalidArgument, "member %q has an empty key in its %s", member, what)
		case len(k) > l.MaxKeyBytes:
			return status.Errorf(codes.InvalidArgument, "member %q: a key of its %s is %d bytes, more than the limit of %d", member, what, len(k), l.MaxKeyBytes)
		case len(v) > l.MaxValueBytes:
			return status.Errorf(codes.InvalidArgument, "member %q: the value of %q in its %s is %d bytes, more than the limit of %d", member, k, what, len(v), l.MaxValueBytes)
		}
	}
	return nil
}
