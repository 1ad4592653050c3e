// Package tcp is the rdma provider for peers on any host: a channel is one
// TCP connection carrying fixed-header frames. Senders write a frame's
// header, application header and payload with one vectored write; receivers
// validate type, sequence, key, bounds and length of every frame before its
// body touches memory, and read payloads straight into the destination (the
// receiving Message or the target region). A channel has no dedicated reader
// goroutine on its hot path: a Recv reads the socket itself, and a
// background goroutine takes over only when the application has left the
// channel idle, to process acknowledgements, one-sided writes and the peer's
// close.
//
// Addresses are "host:port".
package tcp
