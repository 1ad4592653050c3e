// Package rdmatest is the conformance suite that every rdma provider runs,
// and the helpers it needs: a scripted remote peer that runs in a goroutine
// or in another OS process (the test binary re-executed), a recorder for
// log entries, descriptor and goroutine leak checks, and the gRPC baseline
// for the providers' benchmarks.
//
// A provider's test package calls MaybeRunPeer at the top of its TestMain
// (so that the re-executed binary becomes the peer), then Run with a
// Harness describing how to listen and how to start a peer.
package rdmatest
