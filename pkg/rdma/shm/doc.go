// Package shm is the rdma provider for two processes on one host. The two
// sides meet on a unix seqpacket socket, modelled on memif, in one round
// trip for a connection's first channel: the dialer sends its hello (the
// connection's identity, proven with the secret) and, right behind it, the
// setup: the region (a sealed memfd, passed with SCM_RIGHTS) and the
// eventfds it sleeps on for the two rings; the listener answers with its
// proof and connected, with its own eventfds. A later channel of the same
// connection takes the full handshake, one round trip more. Each side
// checks the other's credentials (SO_PEERCRED); the listener creates its
// socket 0600.
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
