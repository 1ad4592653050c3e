package membership_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/fakeclock"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
	"github.com/tether-mesh/tether/pkg/view/membership"
	pb "github.com/tether-mesh/tether/pkg/view/membershippb"
)

// rawClient is a gRPC stub of the service, to speak the protocol wrongly.
func rawClient(t *testing.T, target string) pb.MembershipClient {
	t.Helper()
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return pb.NewMembershipClient(cc)
}

func joinRequest(group, id string) *pb.JoinRequest {
	return &pb.JoinRequest{Kind: &pb.JoinRequest_Join_{Join: &pb.JoinRequest_Join{Group: group, Member: &pb.Member{Id: id}}}}
}

var heartbeatRequest = &pb.JoinRequest{Kind: &pb.JoinRequest_Heartbeat_{Heartbeat: &pb.JoinRequest_Heartbeat{}}}

// keep watches group until the test ends, so that the provider keeps the
// group and its counters while it has no member; the watch is returned.
func keep(t *testing.T, p view.Provider, group string) view.Watcher {
	t.Helper()
	w, err := p.Watch(t.Context(), group, view.View{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// waitStats reads the provider's counters, which change on the server's
// goroutines, until ok or a deadline; w is a watch of the group from keep.
func waitStats(t *testing.T, p view.Provider, w view.Watcher, group string, ok func(view.Stats) bool) view.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		st, err := p.Stats(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		// Every change of the counters installs a view: wait for one.
		if _, err := w.Next(ctx); err != nil {
			t.Fatalf("stats %+v: %v", st, err)
		}
	}
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	p := embedded.New(embedded.WithClock(clock), embedded.WithLease(time.Second, 5*time.Second))
	defer p.Close()
	target := viewtest.Serve(t, p)
	api := rawClient(t, target)
	ctx := t.Context()

	t.Run("heartbeat before join", func(t *testing.T) {
		s, err := api.Join(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(heartbeatRequest)
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("malformed member", func(t *testing.T) {
		s, _ := api.Join(ctx)
		_ = s.Send(&pb.JoinRequest{Kind: &pb.JoinRequest_Join_{Join: &pb.JoinRequest_Join{Group: "g", Member: &pb.Member{Id: "x", Data: make([]byte, view.DefaultLimits.MaxDataBytes+1)}}}})
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
		_ = s.CloseSend()
	})
	t.Run("missing member", func(t *testing.T) {
		s, _ := api.Join(ctx)
		_ = s.Send(&pb.JoinRequest{Kind: &pb.JoinRequest_Join_{Join: &pb.JoinRequest_Join{Group: "g"}}})
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("second join", func(t *testing.T) {
		w := keep(t, p, "twice")
		s, _ := api.Join(ctx)
		_ = s.Send(joinRequest("twice", "a"))
		resp, err := s.Recv()
		if err != nil || resp.GetJoined().GetMember().GetIncarnation() == 0 || resp.GetJoined().GetHeartbeatIntervalNs() != int64(time.Second) || resp.GetJoined().GetLeaseNs() != int64(5*time.Second) {
			t.Fatalf("join answered %v, %v", resp, err)
		}
		_ = s.Send(joinRequest("twice", "b"))
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
		st := waitStats(t, p, w, "twice", func(st view.Stats) bool { return st.Failures == 1 })
		if st.Joins != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("stream closed without leave", func(t *testing.T) {
		w := keep(t, p, "closed")
		s, _ := api.Join(ctx)
		_ = s.Send(joinRequest("closed", "a"))
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseSend()
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("the session ended with %v", err)
		}
		waitStats(t, p, w, "closed", func(st view.Stats) bool { return st.Failures == 1 })
	})
	t.Run("lease expires", func(t *testing.T) {
		s, _ := api.Join(ctx)
		_ = s.Send(joinRequest("expiring", "a"))
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		_ = s.Send(heartbeatRequest)
		clock.Advance(5 * time.Second)
		if _, err := s.Recv(); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("session of an expired lease ended with %v", err)
		}
	})
	t.Run("watch names too many members", func(t *testing.T) {
		refs := make([]*pb.MemberRef, view.DefaultLimits.MaxMembers+1)
		for i := range refs {
			refs[i] = &pb.MemberRef{Id: "m"}
		}
		s, err := api.Watch(ctx, &pb.WatchRequest{Group: "g", After: &pb.ViewID{Epoch: 1, Seq: 1}, AfterMembers: refs})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("watch names a member twice", func(t *testing.T) {
		s, err := api.Watch(ctx, &pb.WatchRequest{Group: "g", After: &pb.ViewID{Epoch: 1, Seq: 1}, AfterMembers: []*pb.MemberRef{{Id: "m"}, {Id: "m"}}})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
	})
}

// TestMembershipEnds: a client's membership reports how it ended.
func TestMembershipEnds(t *testing.T) {
	t.Parallel()
	p := embedded.New()
	target := viewtest.Serve(t, p)
	c := viewtest.Dial(t, target)
	ctx := t.Context()

	// The provider closing ends the session: the membership is lost.
	ms, err := c.Join(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	select {
	case <-ms.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the membership outlived the provider")
	}
	if status.Code(ms.Err()) != codes.Unavailable {
		t.Fatalf("Err = %v, want Unavailable", ms.Err())
	}
	if err := ms.Leave(ctx); err != nil {
		t.Fatalf("Leave of a lost membership: %v", err)
	}
}

// TestClientCloseEndsMemberships: closing a client removes its members at
// once (their streams break) and refuses further calls.
func TestClientCloseEndsMemberships(t *testing.T) {
	t.Parallel()
	p := embedded.New()
	defer p.Close()
	target := viewtest.Serve(t, p)
	c, err := membership.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kept := keep(t, p, "g")
	ms, err := c.Join(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(ms.Err(), ms.Err()) || ms.Err() == nil {
		t.Fatal("membership survived Close")
	}
	for {
		if _, err := w.Next(ctx); err != nil {
			break
		}
	}
	waitStats(t, p, kept, "g", func(st view.Stats) bool { return st.Failures == 1 })
	if _, err := c.Join(ctx, "g", view.Member{ID: "b"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Join after Close: %v", err)
	}
	if _, err := c.Watch(ctx, "g", view.View{}); err == nil {
		t.Fatal("Watch after Close")
	}
}

// TestJoinContext: the context of Join bounds the join, not the membership.
func TestJoinContext(t *testing.T) {
	t.Parallel()
	p := embedded.New()
	defer p.Close()
	c := viewtest.Dial(t, viewtest.Serve(t, p))
	ctx, cancel := context.WithCancel(t.Context())
	ms, err := c.Join(ctx, "g", view.Member{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	v, err := c.View(t.Context(), "g")
	if err != nil || len(v.Members) != 1 || ms.Err() != nil {
		t.Fatalf("after the join's context ended: %+v, %v, %v", v, err, ms.Err())
	}
	done, stop := context.WithCancel(t.Context())
	stop()
	if _, err := c.Join(done, "g", view.Member{ID: "b"}); status.Code(err) != codes.Canceled {
		t.Fatalf("Join with an ended context: %v", err)
	}
}

func TestDialTargets(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"unix:///run/tether/f.sock", "tcp://127.0.0.1:5002", "tcp://[::1]:5002", "tcp://localhost:1/"} {
		c, err := membership.Dial(target)
		if err != nil {
			t.Errorf("Dial(%q): %v", target, err)
			continue
		}
		_ = c.Close()
	}
	for _, target := range []string{"unix://host/path", "tcp://127.0.0.1", "http://x:1", "127.0.0.1:1", "%zz"} {
		if c, err := membership.Dial(target); err == nil {
			_ = c.Close()
			t.Errorf("Dial(%q) accepted a bad target", target)
		}
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := viewtest.SocketPath(t)
	target := "unix://" + path
	// A socket file left by a dead process is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal("the stale socket file is gone:", err)
	}
	lis, err := sockurl.Listen(ctx, target, 0)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer lis.Close()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		if c, err := lis.Accept(); err == nil {
			_ = c.Close()
		}
	}()
	// A socket somebody serves is not.
	if l2, err := sockurl.Listen(ctx, target, 0); err == nil {
		_ = l2.Close()
		t.Fatal("Listen took over a live socket")
	}
	<-accepted
	// A regular file is not a socket to replace.
	file := viewtest.SocketPath(t)
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l3, err := sockurl.Listen(ctx, "unix://"+file, 0); err == nil {
		_ = l3.Close()
		t.Fatal("Listen replaced a regular file")
	}
	tcp, err := sockurl.Listen(ctx, "tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = tcp.Close()
	if _, err := sockurl.Listen(ctx, "udp://x", 0); err == nil {
		t.Fatal("Listen on a bad target")
	}
}

// TestOverTCP joins and watches over TCP on loopback.
func TestOverTCP(t *testing.T) {
	t.Parallel()
	p := embedded.New()
	defer p.Close()
	lis, err := sockurl.Listen(t.Context(), "tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	membership.Register(s, p)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	c := viewtest.Dial(t, "tcp://"+lis.Addr().String())
	ms, err := c.Join(t.Context(), "g", view.Member{ID: "a", Data: []byte("tcp")})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.View(t.Context(), "g")
	if err != nil || len(v.Members) != 1 || string(v.Members[0].Data) != "tcp" {
		t.Fatalf("%+v %v", v, err)
	}
	if err := ms.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// badServer answers with what a broken or hostile server might send.
type badServer struct {
	pb.UnimplementedMembershipServer
	view   *pb.View
	joined *pb.JoinResponse
}

func (s *badServer) GetView(context.Context, *pb.GetViewRequest) (*pb.View, error) {
	return s.view, nil
}

func (s *badServer) Watch(_ *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.View]) error {
	if err := stream.Send(s.view); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (s *badServer) Join(stream grpc.BidiStreamingServer[pb.JoinRequest, pb.JoinResponse]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(s.joined); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestClientRefusesMalformedAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		view   *pb.View
		joined *pb.JoinResponse
	}{
		{"duplicate member", &pb.View{Group: "g", Members: []*pb.Member{{Id: "a"}, {Id: "a"}}}, nil},
		{"another group", &pb.View{Group: "other"}, nil},
		{"empty member ID", &pb.View{Group: "g", Members: []*pb.Member{{}}}, nil},
		{"oversized data", &pb.View{Group: "g", Members: []*pb.Member{{Id: "a", Data: make([]byte, view.DefaultLimits.MaxDataBytes+1)}}}, nil},
		{"nil member in list", &pb.View{Group: "g", Left: []*pb.Member{nil}}, nil},
		{"joined as another member", nil, &pb.JoinResponse{Kind: &pb.JoinResponse_Joined_{Joined: &pb.JoinResponse_Joined{Member: &pb.Member{Id: "b", Incarnation: 1}, HeartbeatIntervalNs: int64(time.Second)}}}},
		{"no heartbeat interval", nil, &pb.JoinResponse{Kind: &pb.JoinResponse_Joined_{Joined: &pb.JoinResponse_Joined{Member: &pb.Member{Id: "a", Incarnation: 1}}}}},
		{"left instead of joined", nil, &pb.JoinResponse{Kind: &pb.JoinResponse_Left_{Left: &pb.JoinResponse_Left{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lis, err := sockurl.Listen(t.Context(), "unix://"+viewtest.SocketPath(t), 0)
			if err != nil {
				t.Fatal(err)
			}
			s := grpc.NewServer()
			pb.RegisterMembershipServer(s, &badServer{view: tt.view, joined: tt.joined})
			go func() { _ = s.Serve(lis) }()
			defer s.Stop()
			c := viewtest.Dial(t, "unix://"+lis.Addr().String())
			ctx := t.Context()
			if tt.view != nil {
				if _, err := c.View(ctx, "g"); status.Code(err) != codes.Internal {
					t.Fatalf("View: %v", err)
				}
				w, err := c.Watch(ctx, "g", view.View{})
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				if _, err := w.Next(ctx); status.Code(err) != codes.Internal {
					t.Fatalf("Watch: %v", err)
				}
			}
			if tt.joined != nil {
				if _, err := c.Join(ctx, "g", view.Member{ID: "a"}); status.Code(err) != codes.Internal {
					t.Fatalf("Join: %v", err)
				}
			}
		})
	}
}
