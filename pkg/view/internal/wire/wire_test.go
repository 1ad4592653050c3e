package wire_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/internal/wire"
	pb "github.com/tether-mesh/tether/pkg/view/membershippb"
)

func sample() view.View {
	return view.View{
		Group: "g",
		ID:    view.ID{Epoch: 3, Seq: 9},
		Members: []view.Member{
			{ID: "a", Incarnation: 1, Endpoints: map[string]string{view.EndpointGRPC: "unix:///a.sock"}, Labels: map[string]string{"zone": "x"}, Data: []byte("state")},
			{ID: "b", Incarnation: 4},
		},
		Joined: []view.Member{{ID: "b", Incarnation: 4}},
		Left:   []view.Member{{ID: "c", Incarnation: 2}},
	}
}

func equalViews(a, b view.View) bool {
	if a.Group != b.Group || a.ID != b.ID {
		return false
	}
	for _, pair := range [][2][]view.Member{{a.Members, b.Members}, {a.Joined, b.Joined}, {a.Left, b.Left}} {
		if len(pair[0]) != len(pair[1]) {
			return false
		}
		for i := range pair[0] {
			if !pair[0][i].Equal(pair[1][i]) {
				return false
			}
		}
	}
	return true
}

func TestViewRoundTrip(t *testing.T) {
	t.Parallel()
	v := sample()
	b, err := proto.Marshal(wire.ViewToProto(v))
	if err != nil {
		t.Fatal(err)
	}
	var m pb.View
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	got, err := wire.ViewFromProto(&m, view.DefaultLimits)
	if err != nil || !equalViews(got, v) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := wire.ViewFromProto(nil, view.DefaultLimits); err == nil {
		t.Fatal("nil view decoded")
	}
	small := view.DefaultLimits
	small.MaxMembers = 1
	if _, err := wire.ViewFromProto(&m, small); err == nil {
		t.Fatal("a view over MaxMembers decoded")
	}
}

func TestAfterRoundTrip(t *testing.T) {
	t.Parallel()
	v := sample()
	id, refs := wire.AfterToProto(v)
	after, err := wire.AfterFromProto("g", id, refs, view.DefaultLimits)
	if err != nil || after.ID != v.ID || len(after.Members) != 2 || !after.Members[1].Same(v.Members[1]) {
		t.Fatalf("%+v, %v", after, err)
	}
	if id, refs := wire.AfterToProto(view.View{}); id != nil || refs != nil {
		t.Fatal("a zero view encodes as something")
	}
	if _, err := wire.AfterFromProto("g", id, []*pb.MemberRef{{Id: ""}}, view.DefaultLimits); err == nil {
		t.Fatal("an empty member ID decoded")
	}
}

func TestMemberEncoding(t *testing.T) {
	t.Parallel()
	m := sample().Members[0]
	b, err := wire.MarshalMember(m)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := wire.MarshalMember(m)
	if string(b) != string(again) {
		t.Fatal("encoding is not deterministic")
	}
	got, err := wire.UnmarshalMember(b, view.DefaultLimits)
	if err != nil || !got.Equal(m) {
		t.Fatalf("%+v, %v", got, err)
	}
	if _, err := wire.UnmarshalMember([]byte{0xff}, view.DefaultLimits); err == nil {
		t.Fatal("garbage decoded")
	}
}

// FuzzViewFromProto: a view message from a peer decodes to a view within
// the limits, which encodes and decodes back to itself, or to an error.
func FuzzViewFromProto(f *testing.F) {
	b, _ := proto.Marshal(wire.ViewToProto(sample()))
	f.Add(b)
	f.Add([]byte{})
	dup, _ := proto.Marshal(&pb.View{Group: "g", Members: []*pb.Member{{Id: "a"}, {Id: "a"}}})
	f.Add(dup)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m pb.View
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		v, err := wire.ViewFromProto(&m, view.DefaultLimits)
		if err != nil {
			return
		}
		if err := view.DefaultLimits.CheckView(v); err != nil {
			t.Fatalf("decoded a view beyond the limits: %v", err)
		}
		again, err := wire.ViewFromProto(wire.ViewToProto(v), view.DefaultLimits)
		if err != nil || !equalViews(again, v) {
			t.Fatalf("round trip of %+v: %+v, %v", v, again, err)
		}
	})
}

// FuzzUnmarshalMember: a member value from etcd decodes to a member within
// the limits that encodes back to an equal member, or to an error.
func FuzzUnmarshalMember(f *testing.F) {
	b, _ := wire.MarshalMember(sample().Members[0])
	f.Add(b)
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := wire.UnmarshalMember(data, view.DefaultLimits)
		if err != nil {
			return
		}
		if err := view.DefaultLimits.CheckMember(m); err != nil {
			t.Fatal(err)
		}
		b, err := wire.MarshalMember(m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := wire.UnmarshalMember(b, view.DefaultLimits)
		if err != nil || !again.Equal(m) {
			t.Fatalf("round trip of %+v: %+v, %v", m, again, err)
		}
	})
}

// FuzzAfterFromProto: the view a peer's watch request resumes after decodes
// to valid, distinct member references within the limits, or to an error.
func FuzzAfterFromProto(f *testing.F) {
	id, refs := wire.AfterToProto(sample())
	b, _ := proto.Marshal(&pb.WatchRequest{Group: "g", After: id, AfterMembers: refs})
	f.Add(b)
	dup, _ := proto.Marshal(&pb.WatchRequest{Group: "g", AfterMembers: []*pb.MemberRef{{Id: "a"}, {Id: "a"}}})
	f.Add(dup)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req pb.WatchRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		after, err := wire.AfterFromProto(req.GetGroup(), req.GetAfter(), req.GetAfterMembers(), view.DefaultLimits)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, m := range after.Members {
			if seen[m.ID] || view.DefaultLimits.CheckMemberID(m.ID) != nil {
				t.Fatalf("decoded %+v", after.Members)
			}
			seen[m.ID] = true
		}
		if len(after.Members) > view.DefaultLimits.MaxMembers {
			t.Fatalf("decoded %d members", len(after.Members))
		}
	})
}
