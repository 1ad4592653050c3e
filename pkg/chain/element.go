package chain

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ServerElement is one link of a server chain. It receives the rest of the
// chain as next and decides whether, when and with what to call it.
type ServerElement interface {
	Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error)
	Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error)
}

// ClientElement is one link of a client chain. It receives the rest of the
// chain as next and passes the call options through.
type ClientElement interface {
	Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error)
	Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error)
}

// NextServer is the rest of a server chain as an element receives it: the
// next link, which holds the next element and the link after it. It is a
// networkservice.NetworkServiceServer. Calling it compiles to one call of the
// next element (the method is inlined into the element), so a hop costs one
// interface call and one stack frame, and a deep chain stays within what the
// processor predicts. Links are made by NewServer and ServerAsNext; a nil
// *NextServer must not be called.
type NextServer struct {
	elem ServerElement
	next *NextServer
}

// Request calls the next element.
func (n *NextServer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return n.elem.Request(ctx, req, n.next)
}

// Close calls the next element.
func (n *NextServer) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return n.elem.Close(ctx, conn, n.next)
}

// ServerAsNext makes the rest of a chain of a plain server: to test an
// element alone with a fake next, or to call an element outside a chain.
func ServerAsNext(srv networkservice.NetworkServiceServer) *NextServer {
	return &NextServer{elem: serverTail{srv: srv}}
}

// NextClient is the rest of a client chain as an element receives it; see
// NextServer. It is a networkservice.NetworkServiceClient.
type NextClient struct {
	elem ClientElement
	next *NextClient
}

// Request calls the next element.
func (n *NextClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return n.elem.Request(ctx, req, n.next, opts...)
}

// Close calls the next element.
func (n *NextClient) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return n.elem.Close(ctx, conn, n.next, opts...)
}

// ClientAsNext makes the rest of a chain of a plain client.
func ClientAsNext(c networkservice.NetworkServiceClient) *NextClient {
	return &NextClient{elem: clientTail{c: c}}
}

// ServerFuncs makes a ServerElement of two functions. A nil function passes
// the call to next unchanged.
type ServerFuncs struct {
	RequestFunc func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error)
	CloseFunc   func(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error)
}

// Request calls RequestFunc, or next when it is nil.
func (f ServerFuncs) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error) {
	if f.RequestFunc == nil {
		return next.Request(ctx, req)
	}
	return f.RequestFunc(ctx, req, next)
}

// Close calls CloseFunc, or next when it is nil.
func (f ServerFuncs) Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error) {
	if f.CloseFunc == nil {
		return next.Close(ctx, conn)
	}
	return f.CloseFunc(ctx, conn, next)
}

// ClientFuncs makes a ClientElement of two functions. A nil function passes
// the call to next unchanged.
type ClientFuncs struct {
	RequestFunc func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error)
	CloseFunc   func(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error)
}

// Request calls RequestFunc, or next when it is nil.
func (f ClientFuncs) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	if f.RequestFunc == nil {
		return next.Request(ctx, req, opts...)
	}
	return f.RequestFunc(ctx, req, next, opts...)
}

// Close calls CloseFunc, or next when it is nil.
func (f ClientFuncs) Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if f.CloseFunc == nil {
		return next.Close(ctx, conn, opts...)
	}
	return f.CloseFunc(ctx, conn, next, opts...)
}

// serverEnd and clientEnd are the last links of every chain, where the request's connection is the
// response.
var (
	serverEnd = &NextServer{elem: serverEndElement{}}
	clientEnd = &NextClient{elem: clientEndElement{}}
)

type serverEndElement struct{}

func (serverEndElement) Request(_ context.Context, req *networkservice.NetworkServiceRequest, _ *NextServer) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (serverEndElement) Close(context.Context, *networkservice.Connection, *NextServer) (*emptypb.Empty, error) {
	return new(emptypb.Empty), nil
}

type clientEndElement struct{}

func (clientEndElement) Request(_ context.Context, req *networkservice.NetworkServiceRequest, _ *NextClient, _ ...grpc.CallOption) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (clientEndElement) Close(context.Context, *networkservice.Connection, *NextClient, ...grpc.CallOption) (*emptypb.Empty, error) {
	return new(emptypb.Empty), nil
}
