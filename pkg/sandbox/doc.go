// Package sandbox builds topologies for heal-driven tests: forwarders, group
// members (child processes or in-process) and clients, over real gRPC on
// unix sockets in a private directory, with the embedded view provider. A
// test kills, restarts or partitions any part and waits, with a deadline,
// for what it expects.
//
//	func TestMemberDies(t *testing.T) {
//		sb := sandbox.New(t)
//		fwd := sb.Forwarder()
//		a := sb.Member(fwd, "echo", "a")
//		sb.Member(fwd, "echo", "b")
//		sb.WaitMembers(fwd, "echo", 2)
//
//		conn, err := sb.Client(fwd).Connect(sb.Context(), "echo")
//		if err != nil {
//			t.Fatal(err)
//		}
//		first := conn.Member()
//		sb.Members()[first].Kill() // SIGKILL: no leave, no goodbye
//		reply, err := conn.Call(sb.Context(), []byte("ping"))
//		if err != nil || string(reply) != "ping" || conn.Member() == first {
//			t.Fatalf("not healed: %q %v on %s", reply, err, conn.Member())
//		}
//		_ = a
//	}
//
// Everything a sandbox starts is stopped when the test ends.
package sandbox
