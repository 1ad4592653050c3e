package chain_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func request(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}}
}

// trace records the order in which elements see a call.
type trace struct {
	mu    sync.Mutex
	steps []string
}

func (t *trace) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.steps = append(t.steps, s)
}

func (t *trace) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprint(t.steps)
}

// step is a server element that records its passage in both directions and
// appends its name to a label, so that the response shows the order too.
func step(t *trace, name string) chain.ServerElement {
	return chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			t.add(name + ">")
			conn, err := next.Request(ctx, req)
			t.add("<" + name)
			if err == nil {
				conn.Payload += name
			}
			return conn, err
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			t.add(name + "x")
			return next.Close(ctx, conn)
		},
	}
}

func clientStep(t *trace, name string) chain.ClientElement {
	return chain.ClientFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
			t.add(fmt.Sprintf("%s>%d", name, len(opts)))
			conn, err := next.Request(ctx, req, opts...)
			t.add("<" + name)
			if err == nil {
				conn.Payload += name
			}
			return conn, err
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
			t.add(name + "x")
			return next.Close(ctx, conn, opts...)
		},
	}
}

// plainServer is a NetworkServiceServer that knows nothing of chains.
type plainServer struct {
	t    *trace
	name string
}

func (p plainServer) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	p.t.add(p.name)
	return req.GetConnection(), nil
}

func (p plainServer) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	p.t.add(p.name + "x")
	return &emptypb.Empty{}, nil
}

type plainClient struct {
	t    *trace
	name string
}

func (p plainClient) Request(_ context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	p.t.add(fmt.Sprintf("%s%d", p.name, len(opts)))
	return req.GetConnection(), nil
}

func (p plainClient) Close(_ context.Context, _ *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	p.t.add(fmt.Sprintf("%sx%d", p.name, len(opts)))
	return &emptypb.Empty{}, nil
}

func TestServerOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		build   func(tr *trace) networkservice.NetworkServiceServer
		want    string
		payload string
		close   string
	}{
		{
			name: "flat",
			build: func(tr *trace) networkservice.NetworkServiceServer {
				return chain.NewServer(step(tr, "a"), step(tr, "b"), step(tr, "c"))
			},
			want: "[a> b> c> <c <b <a]", payload: "cba", close: "[ax bx cx]",
		},
		{
			name: "nested groups",
			build: func(tr *trace) networkservice.NetworkServiceServer {
				return chain.NewServer(step(tr, "a"), chain.Server(step(tr, "b"), chain.Server(step(tr, "c")), step(tr, "d")), step(tr, "e"))
			},
			want: "[a> b> c> d> e> <e <d <c <b <a]", payload: "edcba", close: "[ax bx cx dx ex]",
		},
		{
			name: "plain server as tail",
			build: func(tr *trace) networkservice.NetworkServiceServer {
				return chain.NewServer(step(tr, "a"), chain.Tail(plainServer{tr, "end"}), step(tr, "never"))
			},
			want: "[a> end <a]", payload: "a", close: "[ax endx]",
		},
		{
			name: "chain as tail of a chain",
			build: func(tr *trace) networkservice.NetworkServiceServer {
				inner := chain.NewServer(step(tr, "x"), chain.Tail(plainServer{tr, "end"}))
				return chain.NewServer(step(tr, "a"), chain.Tail(inner))
			},
			want: "[a> x> end <x <a]", payload: "xa", close: "[ax xx endx]",
		},
		{
			name: "client elements inside a server chain",
			build: func(tr *trace) networkservice.NetworkServiceServer {
				return chain.NewServer(step(tr, "a"), chain.ClientToServer(clientStep(tr, "k"), clientStep(tr, "l")), step(tr, "b"))
			},
			want: "[a> k>0 l>0 b> <b <l <k <a]", payload: "blka", close: "[ax kx lx bx]",
		},
		{
			name: "group called directly by an element",
			build: func(tr *trace) networkservice.NetworkServiceServer {
				group := chain.Server(step(tr, "g1"), step(tr, "g2"))
				wrapper := chain.ServerFuncs{
					RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
						return group.Request(ctx, req, next)
					},
					CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
						return group.Close(ctx, conn, next)
					},
				}
				return chain.NewServer(step(tr, "a"), wrapper, step(tr, "b"))
			},
			want: "[a> g1> g2> b> <b <g2 <g1 <a]", payload: "bg2g1a", close: "[ax g1x g2x bx]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := &trace{}
			srv := tt.build(tr)
			conn, err := srv.Request(context.Background(), request("id"))
			if err != nil {
				t.Fatal(err)
			}
			if got := tr.String(); got != tt.want {
				t.Errorf("request order %s, want %s", got, tt.want)
			}
			if conn.GetPayload() != tt.payload {
				t.Errorf("response payload %q, want %q", conn.GetPayload(), tt.payload)
			}
			tr.steps = nil
			if _, err := srv.Close(context.Background(), conn); err != nil {
				t.Fatal(err)
			}
			if got := tr.String(); got != tt.close {
				t.Errorf("close order %s, want %s", got, tt.close)
			}
		})
	}
}

type optA struct{ grpc.EmptyCallOption }

func TestClientOrderAndCallOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		build func(tr *trace) networkservice.NetworkServiceClient
		want  string
		close string
	}{
		{
			name: "flat with a stub as tail",
			build: func(tr *trace) networkservice.NetworkServiceClient {
				return chain.NewClient(clientStep(tr, "a"), clientStep(tr, "b"), chain.ClientTail(plainClient{tr, "stub"}))
			},
			want: "[a>2 b>2 stub2 <b <a]", close: "[ax bx stubx2]",
		},
		{
			name: "server elements inside a client chain keep the options",
			build: func(tr *trace) networkservice.NetworkServiceClient {
				return chain.NewClient(clientStep(tr, "a"), chain.ServerToClient(step(tr, "s"), step(tr, "t")), clientStep(tr, "b"), chain.ClientTail(plainClient{tr, "stub"}))
			},
			want: "[a>2 s> t> b>2 stub2 <b <t <s <a]", close: "[ax sx tx bx stubx2]",
		},
		{
			name: "nested client groups",
			build: func(tr *trace) networkservice.NetworkServiceClient {
				return chain.NewClient(chain.Client(clientStep(tr, "a"), chain.Client(clientStep(tr, "b"))), chain.ClientTail(plainClient{tr, "stub"}))
			},
			want: "[a>2 b>2 stub2 <b <a]", close: "[ax bx stubx2]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := &trace{}
			c := tt.build(tr)
			opts := []grpc.CallOption{optA{}, optA{}}
			conn, err := c.Request(context.Background(), request("id"), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got := tr.String(); got != tt.want {
				t.Errorf("request order %s, want %s", got, tt.want)
			}
			tr.steps = nil
			if _, err := c.Close(context.Background(), conn, opts...); err != nil {
				t.Fatal(err)
			}
			if got := tr.String(); got != tt.close {
				t.Errorf("close order %s, want %s", got, tt.close)
			}
		})
	}
}

func TestClientAssignsID(t *testing.T) {
	t.Parallel()
	c := chain.NewClient()
	req := &networkservice.NetworkServiceRequest{}
	conn, err := c.Request(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if conn.GetId() == "" || req.GetConnection().GetId() != conn.GetId() {
		t.Fatalf("want a fresh ID in request and response, got %q and %q", req.GetConnection().GetId(), conn.GetId())
	}
	if _, err := c.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if n := c.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

func TestHeadRefusesWhatItCannotKey(t *testing.T) {
	t.Parallel()
	srv := chain.NewServer()
	cl := chain.NewClient()
	tests := []struct {
		name string
		call func() error
	}{
		{"server request without connection", func() error {
			_, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{})
			return err
		}},
		{"server request with empty ID", func() error {
			_, err := srv.Request(context.Background(), request(""))
			return err
		}},
		{"server close without connection", func() error { _, err := srv.Close(context.Background(), nil); return err }},
		{"client close with empty ID", func() error {
			_, err := cl.Close(context.Background(), &networkservice.Connection{})
			return err
		}},
		{"client nil request", func() error { _, err := cl.Request(context.Background(), nil); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := status.Code(tt.call()); code != codes.InvalidArgument {
				t.Fatalf("code %v, want InvalidArgument", code)
			}
		})
	}
	if srv.(chain.ConnectionCounter).Connections() != 0 || cl.(chain.ConnectionCounter).Connections() != 0 {
		t.Fatal("a refused call left state behind")
	}
}

func TestElementPanicFreesTheID(t *testing.T) {
	t.Parallel()
	panicking := true
	srv := chain.NewServer(chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			if panicking {
				panic("boom")
			}
			return next.Request(ctx, req)
		},
	})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic did not reach the caller")
			}
		}()
		_, _ = srv.Request(context.Background(), request("id"))
	}()
	panicking = false
	if n := srv.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("%d connections after a panicking first request", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := srv.Request(ctx, request("id")); err != nil {
		t.Fatalf("the ID stayed locked after a panic: %v", err)
	}
}

var errDown = errors.New("downstream failed")
