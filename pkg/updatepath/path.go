package updatepath

import (
	"time"

	"github.com/google/uuid"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultLifetime is how long after a Request a hop's segment expires
// unless refreshed.
const DefaultLifetime = time.Minute

// enter moves conn onto the segment named name, sets its expiry (unless
// expires is nil) and returns the index of the caller's segment, to restore
// on the way back.
func enter(conn *networkservice.Connection, name string, expires *timestamppb.Timestamp) (uint32, error) {
	if conn.Path == nil {
		conn.Path = &networkservice.Path{}
	}
	p := conn.Path
	if len(p.PathSegments) == 0 { // the first hop
		p.Index = 0
		if conn.Id == "" {
			conn.Id = uuid.NewString()
		}
		p.PathSegments = append(p.PathSegments, &networkservice.PathSegment{Name: name, Id: conn.Id, Expires: expires})
		return 0, nil
	}
	if int(p.Index) >= len(p.PathSegments) {
		return 0, status.Errorf(codes.InvalidArgument, "path index %d is out of its %d segments", p.Index, len(p.PathSegments))
	}
	cur := p.PathSegments[p.Index]
	if cur.GetName() == name { // this hop's own segment: a refresh from its own side
		conn.Id = cur.GetId()
		setExpires(cur, expires)
		return p.Index, nil
	}
	if cur.GetId() != conn.Id {
		return 0, status.Errorf(codes.InvalidArgument, "connection ID %q is not the ID %q of its path segment %d", conn.Id, cur.GetId(), p.Index)
	}
	caller := p.Index
	p.Index++
	if int(p.Index) == len(p.PathSegments) {
		p.PathSegments = append(p.PathSegments, &networkservice.PathSegment{Name: name, Id: uuid.NewString()})
	}
	own := p.PathSegments[p.Index]
	if own == nil || own.GetName() != name { // another hop held this place: the connection is new here
		own = &networkservice.PathSegment{Name: name, Id: uuid.NewString()}
		p.PathSegments[p.Index] = own
	}
	setExpires(own, expires)
	conn.Id = own.GetId()
	return caller, nil
}

func setExpires(s *networkservice.PathSegment, expires *timestamppb.Timestamp) {
	if expires != nil {
		s.Expires = expires
	}
}

// leave restores resp, which came back from the next hop, to the caller's
// segment. A next hop that returned no usable path gets the path the request
// was sent with.
func leave(resp *networkservice.Connection, sent *networkservice.Path, caller uint32) {
	if resp == nil {
		return
	}
	if int(caller) >= len(resp.GetPath().GetPathSegments()) {
		resp.Path = sent
	}
	resp.Path.Index = caller
	resp.Id = resp.Path.PathSegments[caller].GetId()
}
