// Package grpcwin fixes the HTTP/2 flow-control windows of tether's gRPC
// clients and servers.
//
// With its default, dynamic windows, gRPC estimates each connection's
// bandwidth-delay product: on a DATA frame it sends a PING and times the
// answer. On tether's control plane (a Request or Close of a few hundred
// bytes per hop) that PING and its answer were a write and a read more on
// each side of every call, for an estimate that only matters to bulk
// transfers. A static window turns the estimator off.
package grpcwin

import "google.golang.org/grpc"

// Window is the stream and connection window: 1 MiB, sixteen times gRPC's
// initial one. It bounds what a peer may send ahead of a slow reader, and
// a control-plane message is far smaller.
const Window = 1 << 20

// DialOptions are the options for grpc.NewClient.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(Window), grpc.WithStaticConnWindowSize(Window)}
}

// ServerOptions are the options for grpc.NewServer.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StaticStreamWindowSize(Window), grpc.StaticConnWindowSize(Window)}
}
