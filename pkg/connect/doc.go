// Package connect is the passthrough element: upon a Request it sends a
// corresponding Request, as a client, to the server at clienturl.ClientURL.
//
// All connections to one URL share one client sub-chain and one
// grpc.ClientConn, counted with refcount and closed by the last Close. A
// connection stays with its client across refreshes; a Request with another
// URL moves it (make before break: the old client connection is closed once
// the new one is up). Elements of the client sub-chain find in their context
// a cancel function (Cancel) that ends the shared connection to their URL, so
// that the next Request redials instead of reusing a dead connection. Place
// connect last in a server chain, after the element that chooses the URL.
package connect
