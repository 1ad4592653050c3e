// Package viewrefresh is the server element that routes each connection to
// a member of the group the connection names, and moves it when that member
// leaves the group. It sits in the forwarder's chain after refcount and
// before connect: it sets the next hop's URL (clienturl) that connect dials.
//
// The group is Connection.NetworkService. The element keeps the
// connection's member, Connection.NetworkServiceEndpointName, while that
// member is in the group's current view (a refresh never moves a healthy
// connection), and otherwise selects one by its Policy among the members
// that publish a gRPC endpoint (view.EndpointGRPC) and match the request's
// selector (SelectorLabel). It records the member in
// NetworkServiceEndpointName and the view's ID in the connection context's
// ExtraContext under ViewIDKey, on the request it passes on and on the
// connection it returns, and sends the request to the member's gRPC
// endpoint.
//
// An empty NetworkServiceEndpointName means "select anew": that is how heal's
// reselect, or any element or client, asks for another member. A name that is
// not in the view is selected anew as well.
//
// The element follows every group it routes connections of with one watch
// of the provider, so the Request path reads the current view from memory:
// it never calls the provider, except to start following a group with its
// first connection. It keeps an index from member to the connections routed
// to it; when a view removes a member, the element re-enters the chain for
// each of those connections with the member cleared, so they move to another
// member at once, without waiting for a client to notice. The index entry of
// a connection goes with its Close, and a group is no longer followed once
// its last connection closed.
package viewrefresh
