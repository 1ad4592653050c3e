package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func listen(t *testing.T, opts ...Option) (rdma.Listener, *rdmatest.LogRecorder) {
	t.Helper()
	logs := rdmatest.NewLogRecorder()
	l, err := New(append([]Option{WithLogger(logs.Logger())}, opts...)...).Listen(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, logs
}

func TestSocketIsPrivate(t *testing.T) {
	rdmatest.CheckLeaks(t)
	l, _ := listen(t)
	st, err := os.Stat(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a 0600 socket", st.Mode())
	}
	dir, err := os.Stat(l.Addr()[:len(l.Addr())-len("/shm.sock")])
	if err != nil || dir.Mode().Perm() != 0o700 {
		t.Errorf("socket directory: %v %v", dir.Mode(), err)
	}
	_ = l.Close()
	if _, err := os.Stat(l.Addr()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestPeerCredentialsChecked(t *testing.T) {
	rdmatest.CheckLeaks(t)
	var seen atomic.Int32
	l, logs := listen(t, WithPeerCheck(func(c unix.Ucred) error {
		seen.Store(c.Pid)
		return fmt.Errorf("user %d not allowed", c.Uid)
	}))
	secret := rdma.NewSecret()
	if _, err := l.Expect("cred", secret); err != nil {
		t.Fatal(err)
	}
	_, err := New().Dial(testCtx(t), l.Addr(), "cred", secret)
	if err == nil {
		t.Fatal("a refused peer attached")
	}
	if logs.WaitFor(testCtx(t), func(e *logrus.Entry) bool { return e.Message == core.LogHandshakeFailed }) == nil {
		t.Fatal("no handshake failure logged")
	}
	if int(seen.Load()) != os.Getpid() {
		t.Errorf("the check saw pid %d, want %d", seen.Load(), os.Getpid())
	}
	if st := l.Stats(); st.HandshakeFailures != 1 || st.Accepted != 0 {
		t.Errorf("stats %+v", st)
	}
	// The dialer checks the listener too.
	l2, _ := listen(t)
	if _, err := l2.Expect("cred", secret); err != nil {
		t.Fatal(err)
	}
	_, err = New(WithPeerCheck(func(unix.Ucred) error { return errors.New("no") })).Dial(testCtx(t), l2.Addr(), "cred", secret)
	if !errors.Is(err, rdma.ErrAuth) {
		t.Errorf("dialer refusing the listener: %v", err)
	}
}

// rawSetup authenticates on l and returns the connection, ready for
// hand-made setup messages.
func rawSetup(t *testing.T, l rdma.Listener, connID string) *net.UnixConn {
	t.Helper()
	secret := rdma.NewSecret()
	if _, err := l.Expect(connID, secret); err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	nc, err := d.DialContext(testCtx(t), "unixpacket", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn := nc.(*net.UnixConn)
	t.Cleanup(func() { _ = conn.Close() })
	if err := handshake.Client(packetConn{conn}, Name, connID, &secret, handshake.ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestMaliciousSetup: a dialer that authenticates but sends a bad region
// or bad descriptors is refused, counted, and leaves nothing open.
func TestMaliciousSetup(t *testing.T) {
	lay := layout{slots: 16, dataSize: 64 << 10}
	sealed := func(t *testing.T, size uint64) int {
		fd, mem, err := createMemfd("test", size, false)
		if err != nil {
			t.Fatal(err)
		}
		lay.writeHeader(mem)
		_ = unix.Munmap(mem)
		return fd
	}
	unsealed := func(t *testing.T, size uint64) int {
		fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	eventfd := func(t *testing.T) int {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	blocking := func(t *testing.T) int { // kicks could block on it
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	pipe := func(t *testing.T) int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		_ = unix.Close(p[1])
		return p[0]
	}
	setup := ctlMsg{typ: ctlSetup, a: uint32(lay.slots), b: lay.dataSize, c: lay.totalSize()}
	type step struct {
		m   ctlMsg
		fds []func(t *testing.T) int
	}
	good := func(t *testing.T) int { return sealed(t, lay.totalSize()) }
	tests := []struct {
		name  string
		steps []step
	}{
		{"region not sealed", []step{{setup, []func(*testing.T) int{func(t *testing.T) int { return unsealed(t, lay.totalSize()) }, eventfd, eventfd}}}},
		{"region smaller than said", []step{{setup, []func(*testing.T) int{func(t *testing.T) int { return sealed(t, lay.totalSize()-pageSize) }, eventfd, eventfd}}}},
		{"region is a pipe", []step{{setup, []func(*testing.T) int{pipe, eventfd, eventfd}}}},
		{"rings too small", []step{{ctlMsg{typ: ctlSetup, a: 2, b: 4096, c: 3 * 4096}, []func(*testing.T) int{func(t *testing.T) int { return sealed(t, 3*4096) }, eventfd, eventfd}}}},
		{"no descriptor", []step{{setup, nil}}},
		{"two descriptors", []step{{setup, []func(*testing.T) int{good, eventfd}}}},
		{"ring with a pipe", []step{{setup, []func(*testing.T) int{good, eventfd, pipe}}}},
		{"ring with a blocking eventfd", []step{{setup, []func(*testing.T) int{good, blocking, eventfd}}}},
		{"ring with the region", []step{{setup, []func(*testing.T) int{good, good, eventfd}}}},
		{"connected instead of setup", []step{{ctlMsg{typ: ctlConnected}, []func(*testing.T) int{eventfd, eventfd}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdmatest.CheckLeaks(t)
			l, logs := listen(t)
			conn := rawSetup(t, l, "evil")
			for _, s := range tt.steps {
				var fds []int
				for _, f := range s.fds {
					fds = append(fds, f(t))
				}
				err := sendCtl(conn, s.m, fds...)
				closeFDs(fds)
				if err != nil {
					break // the listener already hung up
				}
			}
			if logs.WaitFor(testCtx(t), func(e *logrus.Entry) bool { return e.Message == core.LogHandshakeFailed }) == nil {
				t.Fatal("the bad setup was not refused")
			}
			if st := l.Stats(); st.HandshakeFailures != 1 || st.Accepted != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// dialRaw sets a channel up as a dialer would, but returns the parts, so
// that the test can corrupt what the listener reads.
func dialRaw(t *testing.T, l rdma.Listener, connID string) (channelParts, rdma.Channel) {
	t.Helper()
	secret := rdma.NewSecret()
	ep, err := l.Expect(connID, secret)
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	nc, err := d.DialContext(testCtx(t), "unixpacket", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn := nc.(*net.UnixConn)
	p := &provider{o: newOptions(nil)}
	parts, err := p.dialSetup(conn, layout{slots: 16, dataSize: 64 << 10}, connID, &secret, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		parts.release()
		_ = conn.Close()
	})
	victim, err := ep.Accept(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.Close() })
	return parts, victim
}

// TestMaliciousRing: whatever the peer writes in shared memory, the victim
// checks it before use, disconnects the peer and delivers nothing more.
func TestMaliciousRing(t *testing.T) {
	// publish writes descriptors into the first slots and publishes them.
	publish := func(r *ring, ds ...desc) {
		for i := range ds {
			ds[i].encode(r.desc[i*descSize:])
			atomic.StoreUint64(r.pub(uint64(i)), uint64(i)+1)
		}
	}
	tests := []struct {
		name    string
		corrupt func(r *ring, back *ring)
		recv    bool // the victim finds out receiving (else sending)
	}{
		{"descriptor outside the data area", func(r, _ *ring) {
			publish(r, desc{seq: 1, total: 100, length: 100, off: uint32(r.dataSize) - 10, frag: fragFirst | fragLast})
		}, true},
		{"fragment longer than the message", func(r, _ *ring) {
			publish(r, desc{seq: 1, total: 10, length: 100, frag: fragFirst | fragLast})
		}, true},
		{"message over the maximum", func(r, _ *ring) {
			publish(r, desc{seq: 1, total: rdma.MaxPayloadSize + 1, length: 1, frag: fragFirst})
		}, true},
		{"inline overflow", func(r, _ *ring) {
			publish(r, desc{seq: 1, total: 100, length: 100, hdrLen: 10, frag: fragFirst | fragLast | fragInline})
		}, true},
		{"continuation without a start", func(r, _ *ring) {
			publish(r, desc{seq: 1, total: 1, length: 1, frag: fragLast})
		}, true},
		{"sequence number going back", func(r, _ *ring) {
			publish(r, desc{seq: 5, frag: fragFirst | fragLast | fragInline}, desc{seq: 3, frag: fragFirst | fragLast | fragInline})
		}, true},
		{"head beyond what was sent", func(_, back *ring) { atomic.StoreUint64(back.head, 5) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdmatest.CheckLeaks(t)
			l, logs := listen(t)
			parts, victim := dialRaw(t, l, "victim")
			toVictim := ringAt(parts.mem, parts.lay, 0)
			fromVictim := ringAt(parts.mem, parts.lay, 1)
			tt.corrupt(toVictim, fromVictim)
			ctx := testCtx(t)
			var err error
			if tt.recv {
				var m rdma.Message
				for err == nil { // well-formed messages before the bad one are delivered
					err = victim.Recv(ctx, &m)
				}
			} else {
				_, err = victim.Send(ctx, &rdma.Message{Payload: []byte("x")})
				if err == nil {
					_, err = victim.Send(ctx, &rdma.Message{Payload: []byte("y")})
				}
				if err == nil {
					err = victim.WaitAcked(ctx, 1)
				}
			}
			if !errors.Is(err, rdma.ErrProtocol) {
				t.Fatalf("victim: %v, want ErrProtocol", err)
			}
			<-victim.Done()
			var m rdma.Message
			if err := victim.Recv(ctx, &m); !errors.Is(err, rdma.ErrProtocol) {
				t.Errorf("Recv after the violation: %v", err)
			}
			if st := l.Stats(); st.ProtocolErrors != 1 {
				t.Errorf("stats %+v", st)
			}
			if logs.WaitFor(ctx, func(e *logrus.Entry) bool { return e.Message == core.LogProtocolViolation }) == nil {
				t.Error("not logged")
			}
		})
	}
}

// sendThenAnswer has victim send n one-byte messages, then plays its peer
// (the raw end parts): it answers with one message that carries ack as the
// peer's consumer head (desc.ack), and has victim receive it.
func sendThenAnswer(ctx context.Context, t *testing.T, parts channelParts, victim rdma.Channel, n, ack uint64) {
	t.Helper()
	for want := uint64(1); want <= n; want++ {
		if seq, err := victim.Send(ctx, &rdma.Message{Payload: []byte("x")}); err != nil || seq != want {
			t.Fatalf("send: %d %v", seq, err)
		}
	}
	p := newProducer(ringAt(parts.mem, parts.lay, 0))
	p.put(&desc{seq: 1, total: 1, frag: fragFirst | fragLast | fragInline, ack: ack}, nil, []byte("y"))
	var m rdma.Message
	if err := victim.Recv(ctx, &m); err != nil {
		t.Fatal(err)
	}
}

// TestAckRidesOnMessages: what the peer's messages say it consumed
// (desc.ack) is what Acked reports, without the shared head; an
// acknowledgement of more than was sent is a violation.
func TestAckRidesOnMessages(t *testing.T) {
	tests := []struct {
		name      string
		ack       uint64 // carried by the peer's message; the victim sent one
		wantAcked uint64
		violation bool
	}{
		{"covers the message", 1, 1, false},
		{"nothing consumed yet", 0, 0, false},
		// One past pubTail is a slot the consumer took while Send was
		// storing pubTail; two past is a lie.
		{"one slot past what was sent", 2, 1, false},
		{"beyond what was sent", 3, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdmatest.CheckLeaks(t)
			l, _ := listen(t)
			parts, victim := dialRaw(t, l, "acks")
			ctx := testCtx(t)
			// The peer answers without moving its shared head.
			sendThenAnswer(ctx, t, parts, victim, 1, tt.ack)
			fromVictim := ringAt(parts.mem, parts.lay, 1)
			if got := victim.Acked(); got != tt.wantAcked {
				t.Errorf("Acked %d, want %d", got, tt.wantAcked)
			}
			if tt.violation {
				var m rdma.Message
				if err := victim.Recv(ctx, &m); !errors.Is(err, rdma.ErrProtocol) {
					t.Fatalf("Recv after the violation: %v, want ErrProtocol", err)
				}
				return
			}
			select {
			case <-victim.Done():
				t.Fatalf("the victim ended: %v", victim.Err())
			default:
			}
			atomic.StoreUint64(fromVictim.head, max(tt.ack, 1)) // consistent again for Close
		})
	}
}

// TestAckedReadsHeadLast: when the head that the peer's last message
// carries moved, Acked reports it without reading the shared head (a line
// the peer may be writing at that moment); the next look reads the head,
// so that a caller polling Acked sees everything the peer consumed.
func TestAckedReadsHeadLast(t *testing.T) {
	tests := []struct {
		name        string
		carried     uint64 // the head the peer's message carries; the peer consumed both messages
		first, next uint64 // what two looks at Acked report
	}{
		{"carried head moved", 1, 1, 2},
		{"carried head covers all", 2, 2, 2},
		{"carried head tells nothing new", 0, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdmatest.CheckLeaks(t)
			l, _ := listen(t)
			parts, victim := dialRaw(t, l, "acks")
			ctx := testCtx(t)
			sendThenAnswer(ctx, t, parts, victim, 2, tt.carried)
			atomic.StoreUint64(ringAt(parts.mem, parts.lay, 1).head, 2)
			if got := victim.Acked(); got != tt.first {
				t.Errorf("first Acked %d, want %d", got, tt.first)
			}
			if got := victim.Acked(); got != tt.next {
				t.Errorf("next Acked %d, want %d", got, tt.next)
			}
		})
	}
}

// TestRecvResumesAfterContext: a Recv whose context ends between the
// fragments of a message leaves what it consumed to the next Recv.
func TestRecvResumesAfterContext(t *testing.T) {
	rdmatest.CheckLeaks(t)
	l, _ := listen(t)
	parts, ch := dialRaw(t, l, "resume")
	p := newProducer(ringAt(parts.mem, parts.lay, 0))
	payload := rdmatest.Pattern(5, 3*parts.lay.fragMax())
	frag := parts.lay.fragMax()
	p.put(&desc{seq: 1, total: uint32(len(payload)), frag: fragFirst, flags: rdma.FlagRetry, hdrLen: 2}, []byte("hd"), payload[:frag])
	var m rdma.Message
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := ch.Recv(ctx, &m)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv of a third of a message: %v", err)
	}
	p.put(&desc{seq: 1, total: uint32(len(payload))}, nil, payload[frag:2*frag])
	p.put(&desc{seq: 1, total: uint32(len(payload)), frag: fragLast}, nil, payload[2*frag:])
	var m2 rdma.Message
	if err := ch.Recv(testCtx(t), &m2); err != nil {
		t.Fatal(err)
	}
	if string(m2.Header) != "hd" || m2.Seq != 1 || !m2.Retry() {
		t.Errorf("message %d header %q retry %v", m2.Seq, m2.Header, m2.Retry())
	}
	if err := rdmatest.CheckPattern(m2.Payload, 5); err != nil {
		t.Error(err)
	}
}

// TestStaleSocketReplaced: a socket left by a listener that is gone is
// replaced; a live listener's is not.
func TestStaleSocketReplaced(t *testing.T) {
	rdmatest.CheckLeaks(t)
	path := t.TempDir() + "/shm.sock"
	old, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	_ = old.Close() // the file stays, nobody accepts
	l, err := New(WithLogger(rdmatest.NewLogRecorder().Logger())).Listen(context.Background(), path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer l.Close()
	if _, err := New().Listen(context.Background(), path); err == nil {
		t.Fatal("a second listener took a live listener's socket")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the live socket is gone: %v", err)
	}
}

// TestIsEventfd: the descriptors a peer hands over for kicks pass only when
// they live on the kernel's anonymous inode, where a kick's write either
// counts (an eventfd) or fails at once, and never blocks.
func TestIsEventfd(t *testing.T) {
	closing := func(t *testing.T, fd int) int {
		t.Cleanup(func() { _ = unix.Close(fd) })
		return fd
	}
	tests := []struct {
		name string
		fd   func(t *testing.T) int
		want bool
	}{
		{"eventfd", func(t *testing.T) int {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err != nil {
				t.Fatal(err)
			}
			return closing(t, fd)
		}, true},
		{"blocking eventfd", func(t *testing.T) int {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return closing(t, fd)
		}, false},
		{"pipe", func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			closing(t, p[0])
			return closing(t, p[1])
		}, false},
		{"memfd", func(t *testing.T) int {
			fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			return closing(t, fd)
		}, false},
		{"socket", func(t *testing.T) int {
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			closing(t, p[1])
			return closing(t, p[0])
		}, false},
		{"regular file", func(t *testing.T) int {
			f, err := os.Create(t.TempDir() + "/f")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
			return int(f.Fd())
		}, false},
		{"closed descriptor", func(t *testing.T) int {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err != nil {
				t.Fatal(err)
			}
			_ = unix.Close(fd)
			return fd
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isEventfd(tt.fd(t)); got != tt.want {
				t.Fatalf("isEventfd = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWaiter(t *testing.T) {
	asleep := func(ctx context.Context, w *waiter) <-chan error {
		done := make(chan error, 1)
		go func() { done <- w.sleep(ctx) }()
		return done
	}
	wait := func(t *testing.T, done <-chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("the sleeper was not woken")
			return nil
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, w *waiter) error // the error the sleep returned
		want error                               // nil, or what errors.Is must find
	}{
		{"a kick before the first sleep wakes it", func(t *testing.T, w *waiter) error {
			w.kick()
			return wait(t, asleep(context.Background(), w))
		}, nil},
		{"a kick wakes a sleeper", func(t *testing.T, w *waiter) error {
			done := asleep(context.Background(), w)
			w.kick()
			return wait(t, done)
		}, nil},
		{"the end of the context wakes a sleeper", func(t *testing.T, w *waiter) error {
			ctx, cancel := context.WithCancel(context.Background())
			done := asleep(ctx, w)
			cancel()
			return wait(t, done)
		}, context.Canceled},
		{"close wakes a sleeper", func(t *testing.T, w *waiter) error {
			done := asleep(context.Background(), w)
			w.close()
			return wait(t, done)
		}, os.ErrClosed},
		{"a sleep after close fails", func(t *testing.T, w *waiter) error {
			w.close()
			return w.sleep(context.Background())
		}, os.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdmatest.CheckLeaks(t)
			w, err := newWaiter()
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			err = tt.run(t, w)
			if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("sleep returned %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("a kick after close writes nothing", func(t *testing.T) {
		rdmatest.CheckLeaks(t)
		w, err := newWaiter()
		if err != nil {
			t.Fatal(err)
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = unix.Close(p[0]) }()
		w.close()
		// The descriptor number now names the pipe's write end.
		if err := unix.Dup3(p[1], w.fd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		_ = unix.Close(p[1])
		defer func() { _ = unix.Close(w.fd) }()
		w.kick()
		if n, err := unix.Read(p[0], make([]byte, 8)); !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("the pipe got %d bytes (%v): the kick wrote into a reused descriptor", n, err)
		}
	})
}
