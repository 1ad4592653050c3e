// Package member makes a program a member of a group: it opens the channel
// listeners, serves the member's endpoint chain over gRPC (request checking,
// path, expiry, refcount, monitor and the terminal rdma element), joins the
// group through a view provider with its endpoints, and hands every message
// its clients send to the application's call.Handler.
//
//	m, err := member.Start(ctx, member.Config{
//		Group:     "echo",
//		ID:        "echo-1",
//		Views:     views, // membership.Dial(forwarderURL) or an etcd provider
//		ListenURL: "unix:///run/tether/echo-1.sock",
//		Channels:  []member.Channel{{Provider: shm.New()}, {Provider: tcp.New(), Addr: "127.0.0.1:0"}},
//		Handler: func(ctx context.Context, req *call.Request) ([]byte, error) {
//			return req.Payload, nil
//		},
//	})
//	defer m.Stop(context.Background())
//
// A member whose membership is lost (its provider restarted, its lease
// expired) joins again, with back-off, for as long as it runs. Stop leaves
// the group, closes every connection and channel, and stops serving.
package member
