// Package checkrequest refuses malformed requests at the gRPC edge of a
// chain: a missing connection, an empty or oversized connection ID, or
// labels, mechanism parameters or path segments beyond documented limits get
// codes.InvalidArgument with a message that says what is wrong, and nothing
// after the element runs. A Close is checked only for what identifies its
// connection, so that it always reaches the elements that release what the
// connection holds. Place it first in every chain served over gRPC.
package checkrequest
