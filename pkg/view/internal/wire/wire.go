// Package wire converts members and views to and from the protocol buffers
// of the membership service, which the etcd provider also stores. Every
// decoder checks what it decodes against view.Limits: it comes from a peer.
package wire

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tether-mesh/tether/pkg/view"
	pb "github.com/tether-mesh/tether/pkg/view/membershippb"
)

// IDToProto converts an ID.
func IDToProto(id view.ID) *pb.ViewID {
	return &pb.ViewID{Epoch: id.Epoch, Seq: id.Seq}
}

// IDFromProto converts an ID; a missing ID is the zero ID.
func IDFromProto(id *pb.ViewID) view.ID {
	return view.ID{Epoch: id.GetEpoch(), Seq: id.GetSeq()}
}

// MemberToProto converts a member. The result shares m's maps and data.
func MemberToProto(m view.Member) *pb.Member {
	return &pb.Member{Id: m.ID, Incarnation: m.Incarnation, Endpoints: m.Endpoints, Labels: m.Labels, Data: m.Data}
}

// MemberFromProto converts and checks a member; the result shares m's maps
// and data. Empty maps and data become nil.
func MemberFromProto(m *pb.Member, l view.Limits) (view.Member, error) {
	if m == nil {
		return view.Member{}, status.Error(codes.InvalidArgument, "member is missing")
	}
	out := view.Member{ID: m.GetId(), Incarnation: m.GetIncarnation()}
	if len(m.GetEndpoints()) > 0 {
		out.Endpoints = m.GetEndpoints()
	}
	if len(m.GetLabels()) > 0 {
		out.Labels = m.GetLabels()
	}
	if len(m.GetData()) > 0 {
		out.Data = m.GetData()
	}
	if err := l.CheckMember(out); err != nil {
		return view.Member{}, err
	}
	return out, nil
}

// ViewToProto converts a view.
func ViewToProto(v view.View) *pb.View {
	return &pb.View{
		Group:   v.Group,
		Id:      IDToProto(v.ID),
		Members: membersToProto(v.Members),
		Joined:  membersToProto(v.Joined),
		Left:    membersToProto(v.Left),
	}
}

func membersToProto(ms []view.Member) []*pb.Member {
	if len(ms) == 0 {
		return nil
	}
	out := make([]*pb.Member, len(ms))
	for i, m := range ms {
		out[i] = MemberToProto(m)
	}
	return out
}

// ViewFromProto converts and checks a view (view.Limits.CheckView).
func ViewFromProto(v *pb.View, l view.Limits) (view.View, error) {
	if v == nil {
		return view.View{}, status.Error(codes.InvalidArgument, "view is missing")
	}
	out := view.View{Group: v.GetGroup(), ID: IDFromProto(v.GetId())}
	var err error
	for _, list := range []struct {
		dst *[]view.Member
		src []*pb.Member
	}{{&out.Members, v.GetMembers()}, {&out.Joined, v.GetJoined()}, {&out.Left, v.GetLeft()}} {
		if len(list.src) > l.MaxMembers {
			return view.View{}, status.Errorf(codes.InvalidArgument, "view has %d members in a list, more than the limit of %d", len(list.src), l.MaxMembers)
		}
		if *list.dst, err = membersFromProto(list.src, l); err != nil {
			return view.View{}, err
		}
	}
	if err := l.CheckView(out); err != nil {
		return view.View{}, err
	}
	return out, nil
}

func membersFromProto(ms []*pb.Member, l view.Limits) ([]view.Member, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	out := make([]view.Member, len(ms))
	for i, m := range ms {
		var err error
		if out[i], err = MemberFromProto(m, l); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AfterToProto converts the view an observer resumes after into the fields
// of a watch request.
func AfterToProto(after view.View) (*pb.ViewID, []*pb.MemberRef) {
	if after.ID.IsZero() && len(after.Members) == 0 {
		return nil, nil
	}
	refs := make([]*pb.MemberRef, len(after.Members))
	for i, m := range after.Members {
		refs[i] = &pb.MemberRef{Id: m.ID, Incarnation: m.Incarnation}
	}
	return IDToProto(after.ID), refs
}

// AfterFromProto converts the fields of a watch request back into the view
// the observer resumes after: its ID and its members' IDs and incarnations.
func AfterFromProto(group string, id *pb.ViewID, refs []*pb.MemberRef, l view.Limits) (view.View, error) {
	if len(refs) > l.MaxMembers {
		return view.View{}, status.Errorf(codes.InvalidArgument, "watch names %d members, more than the limit of %d", len(refs), l.MaxMembers)
	}
	after := view.View{Group: group, ID: IDFromProto(id)}
	if len(refs) > 0 {
		after.Members = make([]view.Member, len(refs))
		seen := make(map[string]struct{}, len(refs))
		for i, r := range refs {
			if err := l.CheckMemberID(r.GetId()); err != nil {
				return view.View{}, err
			}
			if _, dup := seen[r.GetId()]; dup {
				return view.View{}, status.Errorf(codes.InvalidArgument, "watch names member %q twice", r.GetId())
			}
			seen[r.GetId()] = struct{}{}
			after.Members[i] = view.Member{ID: r.GetId(), Incarnation: r.GetIncarnation()}
		}
	}
	return after, nil
}

// MarshalMember encodes a member as the etcd provider stores it.
func MarshalMember(m view.Member) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(MemberToProto(m))
}

// UnmarshalMember decodes and checks a member the etcd provider stored.
func UnmarshalMember(b []byte, l view.Limits) (view.Member, error) {
	var m pb.Member
	if err := proto.Unmarshal(b, &m); err != nil {
		return view.Member{}, status.Errorf(codes.InvalidArgument, "malformed member: %v", err)
	}
	return MemberFromProto(&m, l)
}
