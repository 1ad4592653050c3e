package view_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
)

func members(refs ...string) []view.Member {
	out := make([]view.Member, len(refs))
	for i, r := range refs {
		id, inc, _ := strings.Cut(r, "#")
		var n uint64
		if _, err := fmt.Sscan(inc, &n); err != nil {
			panic(err)
		}
		out[i] = view.Member{ID: id, Incarnation: n}
	}
	return out
}

func refs(ms []view.Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s#%d", m.ID, m.Incarnation))
	}
	return out
}

func TestDiff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		prev, next       []string
		joined, leftWant []string
	}{
		{"nothing", nil, nil, nil, nil},
		{"first view", nil, []string{"a#1", "b#2"}, []string{"a#1", "b#2"}, nil},
		{"all left", []string{"a#1", "b#2"}, nil, nil, []string{"a#1", "b#2"}},
		{"same", []string{"a#1", "b#2"}, []string{"a#1", "b#2"}, nil, nil},
		{"one joined one left", []string{"a#1", "b#2"}, []string{"b#2", "c#3"}, []string{"c#3"}, []string{"a#1"}},
		{"rejoined under its ID", []string{"a#1", "b#2"}, []string{"b#2", "a#5"}, []string{"a#5"}, []string{"a#1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			joined, left := view.Diff(members(tt.prev...), members(tt.next...))
			if !slices.Equal(refs(joined), append([]string{}, tt.joined...)) || !slices.Equal(refs(left), append([]string{}, tt.leftWant...)) {
				t.Fatalf("Diff = joined %v left %v, want %v %v", refs(joined), refs(left), tt.joined, tt.leftWant)
			}
		})
	}
}

func TestViewLookupAndClone(t *testing.T) {
	t.Parallel()
	v := view.View{Group: "g", ID: view.ID{Epoch: 1, Seq: 2}, Members: []view.Member{
		{ID: "a", Incarnation: 1, Labels: map[string]string{"zone": "x"}, Data: []byte("d")},
		{ID: "b", Incarnation: 2},
	}}
	if v.Rank("b") != 1 || v.Rank("c") != -1 {
		t.Fatalf("Rank: %d %d", v.Rank("b"), v.Rank("c"))
	}
	if m, ok := v.Member("a"); !ok || m.Labels["zone"] != "x" {
		t.Fatalf("Member(a) = %+v, %v", m, ok)
	}
	if _, ok := v.Member("c"); ok {
		t.Fatal("Member(c) found")
	}
	c := v.Clone()
	c.Members[0].Labels["zone"] = "changed"
	c.Members[0].Data[0] = 'X'
	if v.Members[0].Labels["zone"] != "x" || v.Members[0].Data[0] != 'd' {
		t.Fatal("Clone shares maps or data")
	}
	if !v.Members[0].Equal(v.Members[0].Clone()) || v.Members[0].Equal(c.Members[0]) {
		t.Fatal("Equal")
	}
	if !(view.Member{ID: "a", Labels: map[string]string{}}).Equal(view.Member{ID: "a"}) {
		t.Fatal("an empty map is not equal to nil")
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	l := view.DefaultLimits
	long := strings.Repeat("x", l.MaxNameBytes+1)
	tests := []struct {
		name string
		m    view.Member
		want string
	}{
		{"valid", view.Member{ID: "m", Endpoints: map[string]string{"grpc": "unix:///a"}, Labels: map[string]string{"a": "b"}, Data: []byte("x")}, ""},
		{"empty ID", view.Member{}, "member ID is empty"},
		{"long ID", view.Member{ID: long}, "member ID is 254 bytes"},
		{"control character", view.Member{ID: "a\nb"}, "control character"},
		{"invalid UTF-8", view.Member{ID: "a\xffb"}, "not valid UTF-8"},
		{"too many labels", view.Member{ID: "m", Labels: func() map[string]string {
			m := map[string]string{}
			for i := range l.MaxLabels + 1 {
				m[fmt.Sprint(i)] = ""
			}
			return m
		}()}, "65 labels"},
		{"empty label key", view.Member{ID: "m", Labels: map[string]string{"": "v"}}, "empty key"},
		{"long endpoint", view.Member{ID: "m", Endpoints: map[string]string{"grpc": strings.Repeat("u", l.MaxValueBytes+1)}}, "1025 bytes"},
		{"long key", view.Member{ID: "m", Endpoints: map[string]string{strings.Repeat("k", l.MaxKeyBytes+1): ""}}, "257 bytes"},
		{"too much data", view.Member{ID: "m", Data: make([]byte, l.MaxDataBytes+1)}, "16385 bytes of data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := l.CheckMember(tt.m)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckMember = %v, want InvalidArgument saying %q", err, tt.want)
			}
		})
	}
	if status.Code(l.CheckGroup("")) != codes.InvalidArgument || l.CheckGroup("g") != nil {
		t.Fatal("CheckGroup")
	}
	dup := view.View{Group: "g", Members: []view.Member{{ID: "a"}, {ID: "a"}}}
	if err := l.CheckView(dup); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("CheckView of a duplicate member: %v", err)
	}
	small := l
	small.MaxMembers = 1
	if err := small.CheckView(view.View{Group: "g", Left: []view.Member{{ID: "a"}, {ID: "b"}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("CheckView over MaxMembers: %v", err)
	}
	if err := l.CheckView(view.View{Group: "g", Members: []view.Member{{ID: "a"}}, Left: []view.Member{{ID: "a"}}}); err != nil {
		t.Fatalf("CheckView of a member that rejoined: %v", err)
	}
}
