package chain

import (
	"context"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ClientToServer turns client elements into one server element: a server
// chain's call runs through the client elements and then continues with the
// server chain's next element. Call options are empty on this path, unless
// the server chain itself runs inside ServerToClient.
func ClientToServer(elements ...ClientElement) ServerElement {
	a := &clientToServer{elems: slices.Clone(elements)}
	a.dynamic = a.link(&NextServer{elem: dynamicServerEnd{}}, linkConfig{})
	return a
}

// ServerToClient turns server elements into one client element: a client
// chain's call runs through the server elements and then continues with the
// client chain's next element, with the call options it was given.
func ServerToClient(elements ...ServerElement) ClientElement {
	a := &serverToClient{elems: slices.Clone(elements)}
	a.dynamic = a.link(&NextClient{elem: dynamicClientEnd{}}, linkConfig{})
	return a
}

type clientToServer struct {
	elems   []ClientElement
	dynamic *NextServer
}

// link returns a server link that runs the client elements and continues
// with next after them.
func (a *clientToServer) link(next *NextServer, cfg linkConfig) *NextServer {
	inner := linkClients(a.elems, &NextClient{elem: continueServer{next: next}}, cfg)
	return &NextServer{elem: startClient{first: inner}}
}

func (a *clientToServer) linkServer(next *NextServer, cfg linkConfig) *NextServer {
	return a.link(next, cfg)
}

// Request runs the adapter when it is called directly rather than linked.
func (a *clientToServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error) {
	return a.dynamic.Request(withServerNext(ctx, next), req)
}

// Close runs the adapter when it is called directly.
func (a *clientToServer) Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error) {
	return a.dynamic.Close(withServerNext(ctx, next), conn)
}

type serverToClient struct {
	elems   []ServerElement
	dynamic *NextClient
}

// link returns a client link that runs the server elements and continues
// with next after them.
func (a *serverToClient) link(next *NextClient, cfg linkConfig) *NextClient {
	inner := linkServers(a.elems, &NextServer{elem: continueClient{next: next}}, cfg)
	return &NextClient{elem: startServer{first: inner}}
}

func (a *serverToClient) linkClient(next *NextClient, cfg linkConfig) *NextClient {
	return a.link(next, cfg)
}

// Request runs the adapter when it is called directly.
func (a *serverToClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return a.dynamic.Request(withClientNext(ctx, next), req, opts...)
}

// Close runs the adapter when it is called directly.
func (a *serverToClient) Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return a.dynamic.Close(withClientNext(ctx, next), conn, opts...)
}

// startClient is the server element that enters linked client elements; the
// call options of an enclosing client chain come back out of the context.
type startClient struct {
	first *NextClient
}

func (s startClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextServer) (*networkservice.Connection, error) {
	return s.first.Request(ctx, req, callOptions(ctx)...)
}

func (s startClient) Close(ctx context.Context, conn *networkservice.Connection, _ *NextServer) (*emptypb.Empty, error) {
	return s.first.Close(ctx, conn, callOptions(ctx)...)
}

// continueServer is the client element that leaves linked client elements
// for the rest of a server chain.
type continueServer struct {
	next *NextServer
}

func (c continueServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextClient, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	return c.next.Request(ctx, req)
}

func (c continueServer) Close(ctx context.Context, conn *networkservice.Connection, _ *NextClient, _ ...grpc.CallOption) (*emptypb.Empty, error) {
	return c.next.Close(ctx, conn)
}

// startServer is the client element that enters linked server elements; the
// call options cross them in the context (only when there are any).
type startServer struct {
	first *NextServer
}

func (s startServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return s.first.Request(withCallOptions(ctx, opts), req)
}

func (s startServer) Close(ctx context.Context, conn *networkservice.Connection, _ *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return s.first.Close(withCallOptions(ctx, opts), conn)
}

// continueClient is the server element that leaves linked server elements
// for the rest of a client chain, with the call options it was entered with.
type continueClient struct {
	next *NextClient
}

func (c continueClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextServer) (*networkservice.Connection, error) {
	return c.next.Request(ctx, req, callOptions(ctx)...)
}

func (c continueClient) Close(ctx context.Context, conn *networkservice.Connection, _ *NextServer) (*emptypb.Empty, error) {
	return c.next.Close(ctx, conn, callOptions(ctx)...)
}

type callOptionsKey struct{}

func withCallOptions(ctx context.Context, opts []grpc.CallOption) context.Context {
	if len(opts) == 0 && ctx.Value(callOptionsKey{}) == nil {
		return ctx
	}
	return context.WithValue(ctx, callOptionsKey{}, opts)
}

func callOptions(ctx context.Context) []grpc.CallOption {
	opts, _ := ctx.Value(callOptionsKey{}).([]grpc.CallOption)
	return opts
}
