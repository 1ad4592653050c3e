package updatepath

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tether-mesh/tether/pkg/chain"
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
	// The connection ID is the current segment's: the chain's head keys
	// the connection's state by it, and this hop must act on that state.
	if cur.GetId() != conn.Id {
		return 0, status.Errorf(codes.InvalidArgument, "connection ID %q is not the ID %q of its path segment %d", conn.Id, cur.GetId(), p.Index)
	}
	if cur.GetName() == name { // this hop's own segment: a refresh from its own side
		setExpires(cur, expires)
		return p.Index, nil
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

// lastKey holds, per connection, the path as this hop's last successful
// Request left it, on this hop's segment.
var lastKey = chain.NewKey[*networkservice.Path]("updatepath")

// remember stores the path of resp, which came back from the next hop for
// a request sent on this hop's segment own (sent is that request's path),
// for closing. It runs before leave.
func remember(ctx context.Context, resp *networkservice.Connection, sent *networkservice.Path, own uint32) {
	p := resp.GetPath()
	if int(own) >= len(p.GetPathSegments()) {
		p = sent
	}
	last := p.Clone()
	last.Index = own
	lastKey.Store(ctx, last)
}

// closing puts conn, being closed, on this hop's segment of the path its
// last successful Request left: a Close goes where that Request went,
// whatever path it carries, so that every element after this one sees it
// and releases what it holds, even when a peer sent a broken path or none
// (NSM's begin, which comes after its updatepath, keeps such a connection
// for its expiry to close; here the Close itself does it). A hop that has
// no such Request holds nothing for the connection: conn only moves onto
// its segment as on a Request, or the path's error is returned.
func closing(ctx context.Context, conn *networkservice.Connection, name string) error {
	last, ok := lastKey.Load(ctx)
	if !ok {
		_, err := enter(conn, name, nil)
		return err
	}
	conn.Path = last // the connection's last event: nobody needs it after
	conn.Id = last.GetPathSegments()[last.GetIndex()].GetId()
	return nil
}
