// Package shm is the rdma provider for two processes on one host. The two
// sides meet on a unix seqpacket socket, modelled on memif: the handshake
// (hello and init carrying the connection's identity, proven with the
// secret), then the dialer adds the region (a sealed memfd, passed with
// SCM_RIGHTS) and the two rings with the eventfds it sleeps on, and the
// listener answers connected with its own eventfds. The listener checks
// the dialer's credentials (SO_PEERCRED) and creates its socket 0600.
//
// Each direction is a single-producer single-consumer ring of descriptors
// and a data area in the shared memfd. Each descriptor begins with its
// publication number, written last by the producer (the slot's sequence
// number, as in Derecho's windows), so the consumer polls the very cache
// lines that carry the message; the consumer's head and the two sleep flags
// sit on cache lines of their own. Small messages travel inside their
// descriptor; larger ones are split into fragments in the data area, so
// that the sender's copy and the receiver's copy overlap. Waiting is
// hybrid: poll for a bounded time (adapted: halved when polling failed,
// doubled when it succeeded), then sleep on an eventfd that the other side
// kicks only when it saw the sleeper's flag. Every value read from shared
// memory (head, publication numbers, descriptor fields) is checked before
// use, so a misbehaving peer can only hurt its own channel.
//
// One-sided writes are real: a region is a sealed memfd mapped by both
// sides, and Write copies straight into the peer's mapping after checking
// key and bounds. The consumer's head is the acknowledgement: a message is
// acknowledged once the peer's Recv consumed it, without any message back.
//
// Addresses are unix socket paths.
package shm
