package chain

import (
	"context"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Server groups elements into one element, to be nested in another chain.
// Inside a chain the group is linked flat: it costs nothing at call time. It
// has no head of its own: its elements share the metadata store and the
// serialization of the chain it is nested in.
func Server(elements ...ServerElement) ServerElement {
	g := &serverGroup{elems: slices.Clone(elements)}
	g.dynamic = linkServers(g.elems, &NextServer{elem: dynamicServerEnd{}}, linkConfig{})
	return g
}

// Client groups elements into one element, to be nested in another chain.
func Client(elements ...ClientElement) ClientElement {
	g := &clientGroup{elems: slices.Clone(elements)}
	g.dynamic = linkClients(g.elems, &NextClient{elem: dynamicClientEnd{}}, linkConfig{})
	return g
}

// Tail ends a server chain with a plain server: a gRPC client adapted to a
// server, a chain made by NewServer, any NetworkServiceServer. Elements after
// a tail never run.
func Tail(srv networkservice.NetworkServiceServer) ServerElement {
	return serverTail{srv: srv}
}

// ClientTail ends a client chain with a plain client, typically the gRPC stub
// networkservice.NewNetworkServiceClient(cc). Elements after it never run.
func ClientTail(c networkservice.NetworkServiceClient) ClientElement {
	return clientTail{c: c}
}

type serverGroup struct {
	elems   []ServerElement
	dynamic *NextServer
}

func (g *serverGroup) linkServer(next *NextServer, cfg linkConfig) *NextServer {
	return linkServers(g.elems, next, cfg)
}

// Request runs the group when it is called directly rather than linked into a
// chain: next travels in the context to the end of the group.
func (g *serverGroup) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error) {
	return g.dynamic.Request(withServerNext(ctx, next), req)
}

// Close runs the group when it is called directly.
func (g *serverGroup) Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error) {
	return g.dynamic.Close(withServerNext(ctx, next), conn)
}

type clientGroup struct {
	elems   []ClientElement
	dynamic *NextClient
}

func (g *clientGroup) linkClient(next *NextClient, cfg linkConfig) *NextClient {
	return linkClients(g.elems, next, cfg)
}

// Request runs the group when it is called directly.
func (g *clientGroup) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return g.dynamic.Request(withClientNext(ctx, next), req, opts...)
}

// Close runs the group when it is called directly.
func (g *clientGroup) Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return g.dynamic.Close(withClientNext(ctx, next), conn, opts...)
}

type serverTail struct {
	srv networkservice.NetworkServiceServer
}

func (t serverTail) Name() string { return elementName(t.srv) }

func (t serverTail) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextServer) (*networkservice.Connection, error) {
	return t.srv.Request(ctx, req)
}

func (t serverTail) Close(ctx context.Context, conn *networkservice.Connection, _ *NextServer) (*emptypb.Empty, error) {
	return t.srv.Close(ctx, conn)
}

type clientTail struct {
	c networkservice.NetworkServiceClient
}

func (t clientTail) Name() string { return elementName(t.c) }

func (t clientTail) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return t.c.Request(ctx, req, opts...)
}

func (t clientTail) Close(ctx context.Context, conn *networkservice.Connection, _ *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return t.c.Close(ctx, conn, opts...)
}

// The dynamic next: when a group or an adapter is called as an element by
// code outside a chain, the next it was given travels in the context to the
// end of its elements. Linked chains never take this path.

type serverNextKey struct{}

type clientNextKey struct{}

func withServerNext(ctx context.Context, next *NextServer) context.Context {
	return context.WithValue(ctx, serverNextKey{}, next)
}

func withClientNext(ctx context.Context, next *NextClient) context.Context {
	return context.WithValue(ctx, clientNextKey{}, next)
}

func serverNextFrom(ctx context.Context) *NextServer {
	if next, ok := ctx.Value(serverNextKey{}).(*NextServer); ok && next != nil {
		return next
	}
	return serverEnd
}

func clientNextFrom(ctx context.Context) *NextClient {
	if next, ok := ctx.Value(clientNextKey{}).(*NextClient); ok && next != nil {
		return next
	}
	return clientEnd
}

// dynamicServerEnd ends a group's dynamic links with the next the group was
// called with.
type dynamicServerEnd struct{}

func (dynamicServerEnd) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextServer) (*networkservice.Connection, error) {
	return serverNextFrom(ctx).Request(ctx, req)
}

func (dynamicServerEnd) Close(ctx context.Context, conn *networkservice.Connection, _ *NextServer) (*emptypb.Empty, error) {
	return serverNextFrom(ctx).Close(ctx, conn)
}

type dynamicClientEnd struct{}

func (dynamicClientEnd) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, _ *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return clientNextFrom(ctx).Request(ctx, req, opts...)
}

func (dynamicClientEnd) Close(ctx context.Context, conn *networkservice.Connection, _ *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return clientNextFrom(ctx).Close(ctx, conn, opts...)
}
