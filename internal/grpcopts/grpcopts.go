// Package grpcopts holds the options tether sets on every gRPC client and
// server it makes (the client library, connect, members, the forwarder
// daemon and the sandbox); options a user passes come after them and win.
//
// Static flow-control windows. With its default, dynamic windows, gRPC
// estimates each connection's bandwidth-delay product: on a DATA frame it
// sends a PING and times the answer. On tether's control plane (a Request
// or Close of a few hundred bytes per hop) that PING and its answer were a
// write and a read more on each side of every call, for an estimate that
// only matters to bulk transfers. A static window turns the estimator off.
//
// Stream workers. By default a gRPC server starts a goroutine for every
// call. A Request's goroutine runs the whole server chain, and a
// forwarder's also the gRPC client of the next hop, so each new goroutine
// grew its stack two or three times, copying it each time. A server with
// workers hands calls to goroutines that keep their grown stacks (it still
// starts a goroutine when all of them are busy).
package grpcopts

import (
	"runtime"

	"google.golang.org/grpc"
)

// Window is the stream and connection window: 1 MiB, sixteen times gRPC's
// initial one. It bounds what a peer may send ahead of a slow reader, and
// a control-plane message is far smaller.
const Window = 1 << 20

// DialOptions are the options for grpc.NewClient.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(Window), grpc.WithStaticConnWindowSize(Window)}
}

// ServerOptions are the options for grpc.NewServer: the static windows and
// one stream worker per processor the Go scheduler runs on.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StaticStreamWindowSize(Window), grpc.StaticConnWindowSize(Window),
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))), //nolint:gosec // GOMAXPROCS is small and positive
	}
}
