// Package chain composes connection-request elements into servers and
// clients, and gives every connection one metadata store and one serialized
// stream of events.
//
// An element receives the rest of the chain explicitly, as the next argument
// of its Request and Close, in the way gRPC interceptors and net/http
// middleware do:
//
//	type logNames struct{}
//
//	func (logNames) Request(ctx context.Context, req *networkservice.NetworkServiceRequest,
//		next networkservice.NetworkServiceServer) (*networkservice.Connection, error) {
//		log.Printf("request for %s", req.GetConnection().GetNetworkService())
//		return next.Request(ctx, req)
//	}
//
//	func (logNames) Close(ctx context.Context, conn *networkservice.Connection,
//		next networkservice.NetworkServiceServer) (*emptypb.Empty, error) {
//		return next.Close(ctx, conn)
//	}
//
//	srv := chain.NewServer(checkrequest.NewServer(), logNames{}, chain.Tail(endpoint))
//
// NewServer links the elements once; a call walks the links with one
// interface call per element and allocates nothing per hop.
//
// Every chain made by NewServer or NewClient starts with a head that
//
//   - serializes the events of one connection ID (Request, refresh, re-entry,
//     Close): they never run through the chain at the same time, while
//     different IDs run in parallel;
//   - keeps one metadata store per connection ID, created on the first
//     Request and deleted on Close, or when the first Request fails; elements
//     keep typed state in it with a Key they own;
//   - hands out re-entry handles (Reentry) with which an element that must act
//     later, such as heal or view refresh, runs Request or Close again from
//     the start of the chain.
//
// A group of elements made with Server or Client is itself an element and can
// be nested in another chain; Tail and ClientTail end a chain with any plain
// NetworkServiceServer or NetworkServiceClient (a gRPC stub, another chain);
// ClientToServer and ServerToClient adapt client elements to a server chain
// and back. Logger inserts debug logging of what each element changed.
package chain
