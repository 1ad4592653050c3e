package membership

import (
	"context"
	"errors"
	"io"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/wire"
	pb "github.com/tether-mesh/tether/pkg/view/membershippb"
)

type server struct {
	pb.UnimplementedMembershipServer
	p   *embedded.Provider
	log *logrus.Entry
}

// ServerOption configures NewServer.
type ServerOption func(*server)

// WithServerLogger sets the server's logger; the default is logrus's
// standard logger.
func WithServerLogger(log *logrus.Entry) ServerOption {
	return func(s *server) { s.log = log }
}

// NewServer returns the membership service of p. Members joined through it
// hold leases on p with p's heartbeat interval and lease time.
func NewServer(p *embedded.Provider, opts ...ServerOption) pb.MembershipServer {
	s := &server{p: p, log: logrus.NewEntry(logrus.StandardLogger())}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Register registers the membership service of p on s.
func Register(s grpc.ServiceRegistrar, p *embedded.Provider, opts ...ServerOption) {
	pb.RegisterMembershipServer(s, NewServer(p, opts...))
}

func (s *server) GetView(ctx context.Context, req *pb.GetViewRequest) (*pb.View, error) {
	v, err := s.p.View(ctx, req.GetGroup())
	if err != nil {
		return nil, err
	}
	return wire.ViewToProto(v), nil
}

func (s *server) GetStats(ctx context.Context, req *pb.GetStatsRequest) (*pb.Stats, error) {
	st, err := s.p.Stats(ctx, req.GetGroup())
	if err != nil {
		return nil, err
	}
	return &pb.Stats{Views: st.Views, Joins: st.Joins, Leaves: st.Leaves, Expiries: st.Expiries, Failures: st.Failures}, nil
}

func (s *server) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.View]) error {
	ctx := stream.Context()
	after, err := wire.AfterFromProto(req.GetGroup(), req.GetAfter(), req.GetAfterMembers(), s.p.Limits())
	if err != nil {
		return err
	}
	w, err := s.p.Watch(ctx, req.GetGroup(), after)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		v, err := w.Next(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(wire.ViewToProto(v)); err != nil {
			return err
		}
	}
}

// Join runs one member's session: the join, its heartbeats and its leave.
// Every way out of it after the join ends the member's lease.
func (s *server) Join(stream grpc.BidiStreamingServer[pb.JoinRequest, pb.JoinResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	j := first.GetJoin()
	if j == nil {
		return status.Error(codes.InvalidArgument, "the first request of a membership session must be a join")
	}
	m, err := wire.MemberFromProto(j.GetMember(), s.p.Limits())
	if err != nil {
		return err
	}
	lease, err := s.p.JoinLease(ctx, j.GetGroup(), m)
	if err != nil {
		return err
	}
	log := s.log.WithFields(logrus.Fields{"group": lease.Group(), "member": lease.Member().ID})
	v, _ := s.p.View(ctx, lease.Group())
	if err := stream.Send(&pb.JoinResponse{Kind: &pb.JoinResponse_Joined_{Joined: &pb.JoinResponse_Joined{
		Member:              wire.MemberToProto(lease.Member()),
		HeartbeatIntervalNs: int64(lease.HeartbeatInterval()),
		LeaseNs:             int64(lease.LeaseTime()),
		View:                wire.IDToProto(v.ID),
	}}}); err != nil {
		lease.Fail("the join could not be answered: " + err.Error())
		return err
	}

	// Recv blocks, so it runs on a goroutine of its own that hands requests
	// over; it ends when the stream does, which is at the latest when this
	// handler returns.
	requests := make(chan *pb.JoinRequest)
	broken := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				broken <- err
				return
			}
			select {
			case requests <- req:
			case <-quit:
				return
			}
		}
	}()
	for {
		select {
		case req := <-requests:
			switch req.GetKind().(type) {
			case *pb.JoinRequest_Heartbeat_:
				if err := lease.Renew(); err != nil {
					return err
				}
			case *pb.JoinRequest_Leave_:
				if err := lease.Leave(ctx); err != nil {
					return err
				}
				return stream.Send(&pb.JoinResponse{Kind: &pb.JoinResponse_Left_{Left: &pb.JoinResponse_Left{}}})
			default:
				lease.Fail("protocol error: a request other than a heartbeat or a leave")
				return status.Error(codes.InvalidArgument, "a membership session takes heartbeats and a leave after its join")
			}
		case err := <-broken:
			reason := "the heartbeat stream broke: " + err.Error()
			if errors.Is(err, io.EOF) {
				reason = "the member closed its heartbeat stream without leaving"
			}
			lease.Fail(reason)
			log.WithError(err).Debug("membership session broke")
			return nil
		case <-lease.Done():
			return lease.Err()
		case <-ctx.Done():
			lease.Fail("the heartbeat stream ended: " + context.Cause(ctx).Error())
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
