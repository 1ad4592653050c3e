// Package verbs is the rdma provider for RDMA hardware (InfiniBand, RoCE,
// iWARP) through libibverbs and librdmacm. It is built only with the build
// tag rdmaverbs and cgo (go build -tags rdmaverbs); otherwise New returns a
// provider whose Listen and Dial fail with ErrNotBuilt, so that default
// builds stay pure Go.
//
// A channel is one reliable-connected queue pair set up by the RDMA
// connection manager ("ip:port" addresses, as for rdma_cm). Messages travel
// as two-sided sends of fixed-size slots, fragmented when larger, from and
// into buffers registered outside the Go heap; the receiver copies each
// slot out and re-posts it at once, and the queue pair retries a send that
// finds no posted buffer (RNR retry), so buffers never overflow; the
// message window and acknowledgements are those of the other providers.
// One-sided writes are RDMA writes into the peer's registered region,
// checked against key and bounds before they are posted, and by the
// adapter (remote key) when they land. A goroutine per channel waits on the
// completion channel's descriptor through Go's poller and drains the
// completion queue in batches in C; sends of a fragmented message are
// posted as one chain.
//
// The handshake of the other providers runs over the queue pair before
// anything else is accepted.
package verbs
