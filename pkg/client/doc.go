// Package client is the external-client API of tether: dial the node's
// forwarder, connect to a group, get its view, and call, send to and close
// a connection to one of its members over a peer-to-peer channel.
//
//	c, err := client.Dial(ctx, "unix:///var/lib/tether/forwarder.sock")
//	conn, err := c.Connect(ctx, "echo")
//	reply, err := conn.Call(ctx, []byte("ping"))
//	err = conn.Close(ctx)
//	err = c.Close()
//
// The client keeps every connection alive (it refreshes it before its path
// segment expires) and heals it when its member or channel fails.
package client
