package etcd

import (
	"testing"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/internal/wire"
)

func TestMemberKeys(t *testing.T) {
	t.Parallel()
	k := keys{prefix: "/p/"}
	for _, tt := range []struct{ group, id string }{{"g", "m"}, {"a/b", "c/d"}, {"g", "%2F"}, {"grüße", "ü ü"}, {"g", "."}} {
		key := k.member(tt.group, tt.id)
		got, err := k.memberID(tt.group, []byte(key), view.DefaultLimits)
		if err != nil || got != tt.id {
			t.Errorf("memberID(%q) = %q, %v; want %q", key, got, err, tt.id)
		}
		if _, err := k.memberID(tt.group+"x", []byte(key), view.DefaultLimits); err == nil {
			t.Errorf("%q decoded as a member of another group", key)
		}
	}
	for _, bad := range []string{"/p/members/g/", "/p/members/g/a/b", "/p/members/g/%zz", "/p/members/g/a%2fb", "/p/members/g/%00", "/q/members/g/a", "/p/members/g"} {
		if id, err := k.memberID("g", []byte(bad), view.DefaultLimits); err == nil {
			t.Errorf("memberID(%q) = %q", bad, id)
		}
	}
}

// FuzzMemberKey: whatever key etcd holds, memberID returns an ID that
// encodes back to the same key, or an error.
func FuzzMemberKey(f *testing.F) {
	k := keys{prefix: "/tether/view/"}
	for _, s := range []string{"/tether/view/members/g/m", "/tether/view/members/g/a%2Fb", "/tether/view/members/g/%zz", "/tether/view/members/g/", "/tether/view/members/g/a/b", "x"} {
		f.Add("g", []byte(s))
	}
	f.Fuzz(func(t *testing.T, group string, key []byte) {
		id, err := k.memberID(group, key, view.DefaultLimits)
		if err != nil {
			return
		}
		if k.member(group, id) != string(key) {
			t.Fatalf("memberID(%q) = %q, which encodes as %q", key, id, k.member(group, id))
		}
	})
}

// FuzzMemberValue: whatever value etcd holds, decodeMember returns a member
// within the limits, with the ID of its key, or an error.
func FuzzMemberValue(f *testing.F) {
	good, _ := wire.MarshalMember(view.Member{ID: "m", Endpoints: map[string]string{"grpc": "unix:///a"}, Labels: map[string]string{"k": "v"}, Data: []byte("data")})
	other, _ := wire.MarshalMember(view.Member{ID: "other"})
	for _, v := range [][]byte{good, other, {}, {0xff, 0xff}, {0x0a, 0x01}} {
		f.Add(v, int64(7))
	}
	f.Fuzz(func(t *testing.T, value []byte, createRevision int64) {
		m, err := decodeMember("m", value, createRevision, view.DefaultLimits)
		if err != nil {
			return
		}
		if m.ID != "m" || m.Incarnation != uint64(createRevision) || view.DefaultLimits.CheckMember(m) != nil {
			t.Fatalf("decoded %+v", m)
		}
	})
}
