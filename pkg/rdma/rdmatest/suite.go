package rdmatest

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/core"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

// Harness adapts a provider to the suite. The test process is the listening
// side; the peer dials it.
type Harness struct {
	// Provider is the provider of the listening side; it must log into Logs.
	Provider rdma.Provider
	// Logs records the listening side's log entries.
	Logs *LogRecorder
	// Listen opens the listener; nil means Provider.Listen(ctx, ListenAddr).
	Listen func(ctx context.Context) (rdma.Listener, error)
	// ListenAddr is the address given to Provider.Listen when Listen is nil.
	ListenAddr string
	// StartPeer starts a dialing peer (GoroutinePeer or ProcessPeer).
	StartPeer StartFunc
	// RawDial opens a bare handshake connection to addr, for the replay
	// test; nil skips it.
	RawDial func(ctx context.Context, addr string) (handshake.Conn, io.Closer, error)
}

// testTimeout bounds every wait of the suite.
const testTimeout = 60 * time.Second

// Run runs the conformance suite. Its subtests do not run in parallel: each
// checks that no goroutine or descriptor outlives it.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"Demultiplex", testDemultiplex},
		{"Sizes", testSizes},
		{"OrderConcurrentSenders", testOrder},
		{"Backpressure", testBackpressure},
		{"UnackedAfterPeerDeath", testUnackedAfterPeerDeath},
		{"AckedPolled", testAckedPolled},
		{"UnackedCopies", testUnackedCopies},
		{"UnackedWhileBuffersReused", testUnackedWhileBuffersReused},
		{"KilledPeerUnblocks", testKilledPeerUnblocks},
		{"OneSidedWrites", testOneSidedWrites},
		{"WrongSecret", testWrongSecret},
		{"UnknownConnection", testUnknownConnection},
		{"SecondAttachRefused", testSecondAttach},
		{"ReplayedHandshake", testReplay},
		{"ReplayedEarlyHandshake", testReplayEarly},
		{"CloseLocal", testCloseLocal},
		{"ClosePeer", testClosePeer},
		{"EndpointClose", testEndpointClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			CheckLeaks(t)
			tc.run(t, newEnv(t, h))
		})
	}
}

type env struct {
	h    Harness
	l    rdma.Listener
	name string
}

func newEnv(t *testing.T, h Harness) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var l rdma.Listener
	var err error
	if h.Listen != nil {
		l, err = h.Listen(ctx)
	} else {
		l, err = h.Provider.Listen(ctx, h.ListenAddr)
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close listener: %v", err)
		}
	})
	return &env{h: h, l: l, name: h.Provider.Name()}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) expect(t *testing.T, connID string) (rdma.Endpoint, rdma.Secret) {
	t.Helper()
	secret := rdma.NewSecret()
	ep, err := e.l.Expect(connID, secret)
	if err != nil {
		t.Fatalf("expect %q: %v", connID, err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	return ep, secret
}

func (e *env) start(t *testing.T, connID string, secret rdma.Secret) Peer {
	t.Helper()
	return e.h.StartPeer(t, PeerConfig{Provider: e.name, Addr: e.l.Addr(), ConnID: connID, Secret: secret.Encode()})
}

// attach expects connID, starts a peer that dials it and returns both ends.
func (e *env) attach(t *testing.T, connID string) (rdma.Channel, Peer) {
	t.Helper()
	ep, secret := e.expect(t, connID)
	peer := e.start(t, connID, secret)
	ch, err := ep.Accept(ctxT(t))
	if err != nil {
		t.Fatalf("accept %q: %v", connID, err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	if got := peer.Dialed(t); got != "ok dialed" {
		t.Fatalf("peer dial: %s", got)
	}
	if ch.ConnID() != connID || ch.Provider() != e.name {
		t.Fatalf("channel is %q/%q, want %q/%q", ch.Provider(), ch.ConnID(), e.name, connID)
	}
	return ch, peer
}

func wantOK(t *testing.T, reply, what string) string {
	t.Helper()
	if reply != "ok" && !strings.HasPrefix(reply, "ok ") {
		t.Fatalf("%s: peer answered %q", what, reply)
	}
	return strings.TrimSpace(strings.TrimPrefix(reply, "ok"))
}

func waitDone(t *testing.T, ch rdma.Channel, what string) {
	t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-ch.Done():
	case <-timer.C:
		t.Fatalf("%s: the channel did not end within %v", what, testTimeout)
	}
}

func testMessage(stream, index uint32, seed uint64, hdrLen, size int, flags rdma.Flags) rdma.Message {
	return rdma.Message{Flags: flags, Header: header(stream, index, seed, hdrLen), Payload: Pattern(seed, size)}
}

func checkMessage(t *testing.T, got *rdma.Message, want *rdma.Message) {
	t.Helper()
	if got.Flags != want.Flags {
		t.Errorf("message %d: flags %#x, want %#x", got.Seq, got.Flags, want.Flags)
	}
	if string(got.Header) != string(want.Header) {
		t.Errorf("message %d: header %x, want %x", got.Seq, got.Header, want.Header)
	}
	_, _, seed, err := parseHeader(want.Header)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Payload) != len(want.Payload) {
		t.Fatalf("message %d: payload of %d bytes, want %d", got.Seq, len(got.Payload), len(want.Payload))
	}
	if err := CheckPattern(got.Payload, seed); err != nil {
		t.Errorf("message %d: %v", got.Seq, err)
	}
}

func testDemultiplex(t *testing.T, e *env) {
	type pair struct {
		ch   rdma.Channel
		peer Peer
	}
	var pairs []pair
	for i := range 3 {
		ch, peer := e.attach(t, fmt.Sprintf("demux-%d", i))
		pairs = append(pairs, pair{ch, peer})
	}
	ctx := ctxT(t)
	for i, p := range pairs {
		m := testMessage(uint32(i), 0, uint64(50+i), 16, 100+i, 0)
		if _, err := p.ch.Send(ctx, &m); err != nil {
			t.Fatalf("send on %s: %v", p.ch.ConnID(), err)
		}
		p.peer.Request(t, "echo 1")
	}
	for i, p := range pairs {
		wantOK(t, p.peer.Reply(t), "echo")
		var got rdma.Message
		if err := p.ch.Recv(ctx, &got); err != nil {
			t.Fatalf("recv on %s: %v", p.ch.ConnID(), err)
		}
		want := testMessage(uint32(i), 0, uint64(50+i), 16, 100+i, 0)
		checkMessage(t, &got, &want)
	}
}

func testSizes(t *testing.T, e *env) {
	ch, peer := e.attach(t, "sizes")
	ctx := ctxT(t)
	sizes := []int{0, 1, 63, 64, 65, 104, 105, 4095, 4096, 65539, 1<<20 + 7, rdma.MaxPayloadSize}
	if testing.Short() {
		sizes = sizes[:len(sizes)-1]
	}
	var last uint64
	for i, n := range sizes {
		flags := rdma.Flags(0)
		if i%3 == 0 {
			flags = rdma.FlagRetry
		}
		want := testMessage(1, uint32(i), uint64(100+i), []int{16, 64, 17, 40}[i%4], n, flags)
		// A message larger than the receiver's buffers is only sent while
		// the receiver receives: start the echo first.
		peer.Request(t, "echo 1")
		seq, err := ch.Send(ctx, &want)
		if err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
		if seq <= last || want.Seq != seq {
			t.Fatalf("send %d bytes: sequence number %d (m.Seq %d) after %d", n, seq, want.Seq, last)
		}
		last = seq
		var got rdma.Message
		if err := ch.Recv(ctx, &got); err != nil {
			t.Fatalf("recv %d bytes: %v", n, err)
		}
		wantOK(t, peer.Reply(t), "echo")
		checkMessage(t, &got, &want)
		if got.Retry() != (flags == rdma.FlagRetry) {
			t.Errorf("Retry() = %v for flags %#x", got.Retry(), flags)
		}
	}
	tooBig := []rdma.Message{
		{Payload: make([]byte, rdma.MaxPayloadSize+1)},
		{Header: make([]byte, rdma.MaxHeaderSize+1)},
	}
	for _, m := range tooBig {
		if _, err := ch.Send(ctx, &m); !errors.Is(err, rdma.ErrTooLarge) {
			t.Errorf("send header %d payload %d: %v, want ErrTooLarge", len(m.Header), len(m.Payload), err)
		}
	}
	if _, err := ch.Send(ctx, &rdma.Message{Flags: 0x80}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Errorf("send with unknown flags: %v, want ErrInvalidArgument", err)
	}
	// The refusals did not harm the channel.
	want := testMessage(1, 99, 199, 16, 10, 0)
	if _, err := ch.Send(ctx, &want); err != nil {
		t.Fatal(err)
	}
	wantOK(t, peer.Do(t, "echo 1"), "echo")
	var got rdma.Message
	if err := ch.Recv(ctx, &got); err != nil {
		t.Fatal(err)
	}
	checkMessage(t, &got, &want)
	if err := ch.WaitAcked(ctx, want.Seq); err != nil {
		t.Fatalf("wait acked: %v", err)
	}
}

func testOrder(t *testing.T, e *env) {
	ch, peer := e.attach(t, "order")
	ctx := ctxT(t)
	const streams = 4
	perStream := 300
	if testing.Short() {
		perStream = 100
	}
	peer.Request(t, fmt.Sprintf("order %d %d", streams, perStream))
	errs := make(chan error, streams)
	for s := range streams {
		go func() {
			var last uint64
			for i := range perStream {
				m := testMessage(uint32(s), uint32(i), uint64(s*100000+i), 16, 32+i%50, 0)
				seq, err := ch.Send(ctx, &m)
				if err != nil {
					errs <- err
					return
				}
				if seq <= last {
					errs <- fmt.Errorf("stream %d: sequence number %d after %d", s, seq, last)
					return
				}
				last = seq
			}
			errs <- nil
		}()
	}
	for range streams {
		if err := <-errs; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	wantOK(t, peer.Reply(t), "order")
}

func parseStats(t *testing.T, s string) map[string]int {
	t.Helper()
	out := make(map[string]int)
	for _, kv := range strings.Fields(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("bad stats %q", s)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("bad stats %q", s)
		}
		out[k] = n
	}
	return out
}

func testBackpressure(t *testing.T, e *env) {
	ch, peer := e.attach(t, "backpressure")
	const size = 64 << 10
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	msgs := make([]rdma.Message, 0, 1024)
	for {
		i := len(msgs)
		m := testMessage(3, uint32(i), uint64(300+i), 16, size, 0)
		_, err := ch.Send(canceled, &m)
		if errors.Is(err, context.Canceled) {
			break
		}
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		msgs = append(msgs, m)
		if len(msgs) == cap(msgs) {
			t.Fatalf("sent %d messages of %d bytes to a stalled receiver without blocking", len(msgs), size)
		}
	}
	n := len(msgs)
	if n == 0 {
		t.Fatal("the first send blocked")
	}
	st := ch.Stats()
	if st.InFlight != n || st.InFlightBytes != n*size {
		t.Errorf("sender in flight: %d messages, %d bytes; want %d, %d", st.InFlight, st.InFlightBytes, n, n*size)
	}
	ps := parseStats(t, wantOK(t, peer.Do(t, "stats"), "stats"))
	if n > ps["window"] {
		t.Errorf("%d messages in flight exceed the receiver's window of %d", n, ps["window"])
	}
	if wb := ps["windowbytes"]; wb > 0 && n*size > max(wb, size) {
		t.Errorf("%d bytes in flight exceed the receiver's window of %d bytes", n*size, wb)
	}
	if ps["queued"] > ps["window"] || (ps["windowbytes"] > 0 && ps["queuedbytes"] > max(ps["windowbytes"], size)) {
		t.Errorf("receiver buffers %d messages, %d bytes; window %d, %d bytes", ps["queued"], ps["queuedbytes"], ps["window"], ps["windowbytes"])
	}
	t.Logf("a stalled receiver stopped the sender after %d messages of %d bytes (receiver window %d messages, %d bytes)", n, size, ps["window"], ps["windowbytes"])
	// Once the receiver drains, the sender proceeds.
	wantOK(t, peer.Do(t, fmt.Sprintf("drain %d", n)), "drain")
	ctx := ctxT(t)
	m := testMessage(3, uint32(n), uint64(300+n), 16, size, 0)
	if _, err := ch.Send(ctx, &m); err != nil {
		t.Fatalf("send after drain: %v", err)
	}
	wantOK(t, peer.Do(t, "drain 1"), "drain")
	if err := ch.WaitAcked(ctx, m.Seq); err != nil {
		t.Fatalf("wait acked: %v", err)
	}
	if st := ch.Stats(); st.InFlight != 0 || st.Acked < m.Seq {
		t.Errorf("after everything was received: %d in flight, acked %d of %d", st.InFlight, st.Acked, m.Seq)
	}
}

func testUnackedAfterPeerDeath(t *testing.T, e *env) {
	ch, peer := e.attach(t, "unacked")
	ctx := ctxT(t)
	const total, received = 24, 5
	sent := make(map[uint64]rdma.Message)
	var seqs []uint64
	for i := range total {
		flags := rdma.Flags(0)
		if i%4 == 1 {
			flags = rdma.FlagRetry
		}
		m := testMessage(4, uint32(i), uint64(400+i), 16+i%8, []int{0, 10, 200, 5000, 70000}[i%5], flags)
		if _, err := ch.Send(ctx, &m); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent[m.Seq] = m
		seqs = append(seqs, m.Seq)
	}
	got := make(map[uint64]bool)
	for _, f := range strings.Fields(wantOK(t, peer.Do(t, fmt.Sprintf("recvseqs %d", received)), "recvseqs")) {
		seq, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		got[seq] = true
	}
	if len(got) != received {
		t.Fatalf("peer received %d messages, want %d", len(got), received)
	}
	peer.Kill(t)
	waitDone(t, ch, "peer killed")
	if err := ch.Err(); !errors.Is(err, rdma.ErrPeerLost) || rdma.IsCleanClose(err) {
		t.Errorf("after the peer was killed: %v, want ErrPeerLost", err)
	}
	acked := ch.Acked()
	unacked := ch.Unacked()
	inUnacked := make(map[uint64]bool)
	var prev uint64
	for _, u := range unacked {
		if u.Seq <= prev {
			t.Errorf("unacked out of order: %d after %d", u.Seq, prev)
		}
		prev = u.Seq
		if u.Seq <= acked {
			t.Errorf("message %d is acknowledged (up to %d) and unacked", u.Seq, acked)
		}
		want, ok := sent[u.Seq]
		if !ok {
			t.Errorf("unacked message %d was never sent", u.Seq)
			continue
		}
		checkMessage(t, &u, &want)
		inUnacked[u.Seq] = true
	}
	for _, seq := range seqs {
		switch {
		case seq <= acked && !got[seq]:
			t.Errorf("message %d acknowledged but never received", seq)
		case !got[seq] && !inUnacked[seq]:
			t.Errorf("message %d neither received nor reported unacknowledged", seq)
		case seq > acked && !inUnacked[seq]:
			t.Errorf("message %d not acknowledged (up to %d) and not reported", seq, acked)
		}
	}
	t.Logf("peer received %d of %d; acked up to %d; %d reported unacknowledged", received, total, acked, len(unacked))
	// A closed channel keeps its record.
	_ = ch.Close()
	if n := len(ch.Unacked()); n != len(unacked) {
		t.Errorf("after Close: %d unacked, want %d", n, len(unacked))
	}
}

// testAckedPolled checks that a sender that only polls Acked (no
// WaitAcked, no other call) sees its messages acknowledged.
func testAckedPolled(t *testing.T, e *env) {
	ch, peer := e.attach(t, "ackedpolled")
	ctx := ctxT(t)
	for i := range 3 {
		m := testMessage(10, uint32(i), uint64(1000+i), 16, 100, 0)
		if _, err := ch.Send(ctx, &m); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		wantOK(t, peer.Do(t, "drain 1"), "drain")
		for ch.Acked() < m.Seq {
			if ctx.Err() != nil {
				t.Fatalf("message %d received, Acked still %d", m.Seq, ch.Acked())
			}
			runtime.Gosched()
		}
	}
}

// testUnackedCopies checks that Unacked leaves out what Acked covered
// before the call and returns copies: the sender's reuse of its buffers
// does not change them.
func testUnackedCopies(t *testing.T, e *env) {
	ch, peer := e.attach(t, "unackedcopies")
	ctx := ctxT(t)
	const total, received = 10, 4
	message := func(i int) rdma.Message {
		return testMessage(8, uint32(i), uint64(800+i), 16+i%8, []int{0, 10, 200, 5000, 70000}[i%5], rdma.Flags(i%2))
	}
	sent := make([]rdma.Message, total)
	for i := range sent {
		sent[i] = message(i)
		if _, err := ch.Send(ctx, &sent[i]); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	wantOK(t, peer.Do(t, fmt.Sprintf("drain %d", received)), "drain")
	if err := ch.WaitAcked(ctx, sent[received-1].Seq); err != nil {
		t.Fatalf("wait acked: %v", err)
	}
	acked := ch.Acked()
	unacked, again := ch.Unacked(), ch.Unacked()
	if acked < sent[received-1].Seq {
		t.Errorf("acked %d after WaitAcked(%d)", acked, sent[received-1].Seq)
	}
	// The peer's application took the first messages and no more.
	if len(unacked) != total-received || len(again) != len(unacked) {
		t.Fatalf("%d and %d unacked messages, want %d", len(unacked), len(again), total-received)
	}
	for i, want := range sent[received:] {
		if u := &unacked[i]; u.Seq <= acked || u.Seq != want.Seq {
			t.Errorf("unacked message %d is %d; want %d, after the acknowledged %d", i, u.Seq, want.Seq, acked)
		}
	}
	// The sender takes its buffers back and reuses them (here after Close,
	// as heal does after its replay; pkg/call does once Acked covers them).
	_ = ch.Close()
	scribble(sent...)
	checkMessages := func(ms []rdma.Message) {
		for i := range ms {
			want := message(received + i)
			checkMessage(t, &ms[i], &want)
		}
	}
	checkMessages(unacked)
	// Each call's copies are its own.
	scribble(unacked...)
	checkMessages(again)
}

// testUnackedWhileBuffersReused races Unacked with a sender that reuses
// each payload as soon as Acked covers it: every copy Unacked returns must
// be intact (and, under the race detector, taken before the reuse).
func testUnackedWhileBuffersReused(t *testing.T, e *env) {
	ch, peer := e.attach(t, "unackedreuse")
	ctx := ctxT(t)
	n := 400
	if testing.Short() {
		n = 100
	}
	// The peer checks every payload it receives: a buffer reused before
	// its message was received would fail it.
	peer.Request(t, fmt.Sprintf("drain %d", n))
	stop := make(chan struct{})
	replayed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				replayed <- nil
				return
			default:
			}
			for _, u := range ch.Unacked() {
				_, _, seed, err := parseHeader(u.Header)
				if err == nil {
					err = CheckPattern(u.Payload, seed)
				}
				if err != nil {
					replayed <- fmt.Errorf("unacked message %d: %w", u.Seq, err)
					return
				}
			}
			runtime.Gosched()
		}
	}()
	var pending []rdma.Message // sent, not yet seen acknowledged
	reuse := func() {
		acked := ch.Acked()
		k := 0
		for k < len(pending) && pending[k].Seq <= acked {
			k++
		}
		scribble(pending[:k]...)
		pending = pending[k:]
	}
	for i := range n {
		m := testMessage(9, uint32(i), uint64(900+i), 16, 64+(i*97)%3000, 0)
		if _, err := ch.Send(ctx, &m); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		pending = append(pending, m)
		reuse()
	}
	if len(pending) > 0 {
		if err := ch.WaitAcked(ctx, pending[len(pending)-1].Seq); err != nil {
			t.Fatalf("wait acked: %v", err)
		}
		reuse()
	}
	wantOK(t, peer.Reply(t), "drain")
	close(stop)
	if err := <-replayed; err != nil {
		t.Error(err)
	}
	if len(pending) != 0 {
		t.Errorf("%d messages not acknowledged after WaitAcked", len(pending))
	}
}

// scribble overwrites the headers and payloads of ms, as a sender reusing
// its buffers does.
func scribble(ms ...rdma.Message) {
	for _, m := range ms {
		for _, b := range [][]byte{m.Header, m.Payload} {
			for i := range b {
				b[i] = 0xa5
			}
		}
	}
}

func testKilledPeerUnblocks(t *testing.T, e *env) {
	ch, peer := e.attach(t, "killed")
	ctx := ctxT(t)
	// Fill the peer's window, so that a Send blocks.
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; ; i++ {
		m := testMessage(5, uint32(i), uint64(i), 16, 4096, 0)
		if _, err := ch.Send(canceled, &m); errors.Is(err, context.Canceled) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if i > 1<<20 {
			t.Fatal("never blocked")
		}
	}
	errs := make(chan error, 2)
	go func() {
		var m rdma.Message
		errs <- ch.Recv(ctx, &m)
	}()
	go func() {
		m := testMessage(5, 0, 1, 16, 4096, 0)
		_, err := ch.Send(ctx, &m)
		errs <- err
	}()
	peer.Kill(t)
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, rdma.ErrPeerLost) {
				t.Errorf("blocked call returned %v, want ErrPeerLost", err)
			}
		case <-ctx.Done():
			t.Fatal("a blocked call did not return after the peer was killed")
		}
	}
	if err := ch.WaitAcked(ctx, ch.Stats().LastSeq); !errors.Is(err, rdma.ErrPeerLost) {
		t.Errorf("wait acked after the peer died: %v", err)
	}
}

func testOneSidedWrites(t *testing.T, e *env) {
	ch, peer := e.attach(t, "writes")
	ctx := ctxT(t)
	const size = 4096
	keyText := wantOK(t, peer.Do(t, fmt.Sprintf("region %d", size)), "region")
	var m rdma.Message
	if err := ch.Recv(ctx, &m); err != nil {
		t.Fatal(err)
	}
	if string(m.Header) != "region" || len(m.Payload) != 12 {
		t.Fatalf("region message %q %x", m.Header, m.Payload)
	}
	key := rdma.RegionKey(binary.LittleEndian.Uint32(m.Payload))
	if strconv.FormatUint(uint64(key), 10) != keyText || binary.LittleEndian.Uint64(m.Payload[4:]) != size {
		t.Fatalf("region message says key %d size %d; peer said %s", key, binary.LittleEndian.Uint64(m.Payload[4:]), keyText)
	}
	a, b := Pattern(11, 100), Pattern(12, 100)
	var last uint64
	for _, w := range []struct {
		off  uint64
		data []byte
	}{{0, a}, {size - 100, b}, {size, nil}, {2000, nil}} {
		seq, err := ch.Write(ctx, key, w.off, w.data)
		if err != nil {
			t.Fatalf("write %d bytes at %d: %v", len(w.data), w.off, err)
		}
		if seq <= last {
			t.Fatalf("write sequence number %d after %d", seq, last)
		}
		last = seq
	}
	bad := []struct {
		key  rdma.RegionKey
		off  uint64
		data []byte
		want error
	}{
		{key, size - 99, b, rdma.ErrOutOfBounds},
		{key, size + 1, nil, rdma.ErrOutOfBounds},
		{key, 1 << 63, a[:1], rdma.ErrOutOfBounds},
		{key, math.MaxUint64, a[:1], rdma.ErrOutOfBounds},
		{key + 1000, 0, a, rdma.ErrUnknownRegion},
		{0, 0, a, rdma.ErrUnknownRegion},
	}
	for _, w := range bad {
		if _, err := ch.Write(ctx, w.key, w.off, w.data); !errors.Is(err, w.want) {
			t.Errorf("write %d bytes at %d in region %d: %v, want %v", len(w.data), w.off, w.key, err, w.want)
		}
	}
	if _, err := ch.Write(ctx, key, 0, make([]byte, rdma.MaxPayloadSize+1)); !errors.Is(err, rdma.ErrTooLarge) && !errors.Is(err, rdma.ErrOutOfBounds) {
		t.Errorf("write larger than the maximum: %v", err)
	}
	// Messages sent after writes are delivered after the writes landed.
	for range 2 {
		if _, err := ch.Send(ctx, &rdma.Message{Header: []byte("fence")}); err != nil {
			t.Fatal(err)
		}
	}
	wantOK(t, peer.Do(t, "checkregion 0 100 11"), "check region start")
	wantOK(t, peer.Do(t, fmt.Sprintf("checkregion %d 100 12", size-100)), "check region end")
	wantOK(t, peer.Do(t, fmt.Sprintf("zeroes 100 %d", size-200)), "check region middle")
	if err := ch.WaitAcked(ctx, last); err != nil {
		t.Fatalf("wait for the writes: %v", err)
	}
	if acked := ch.Acked(); acked < last {
		t.Errorf("acked %d after the last write %d completed", acked, last)
	}
	if st := ch.Stats(); st.Written != 4 {
		t.Errorf("stats count %d writes, want 4", st.Written)
	}
}

func waitLog(t *testing.T, logs *LogRecorder, connID string, want error) *logrus.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	entry := logs.WaitFor(ctx, func(en *logrus.Entry) bool {
		err, _ := en.Data[logrus.ErrorKey].(error)
		return en.Message == core.LogHandshakeFailed && en.Data["conn_id"] == connID && (want == nil || errors.Is(err, want))
	})
	if entry == nil {
		t.Fatalf("no %q logged for %q (error %v)", core.LogHandshakeFailed, connID, want)
	}
	return entry
}

func checkSecretNotLogged(t *testing.T, logs *LogRecorder, secrets ...rdma.Secret) {
	t.Helper()
	for _, s := range secrets {
		for _, form := range []string{s.Encode(), hex.EncodeToString(s[:]), base64.StdEncoding.EncodeToString(s[:]), string(s[:])} {
			if logs.Contains(form) {
				t.Errorf("a log entry contains the secret")
			}
		}
	}
}

func testWrongSecret(t *testing.T, e *env) {
	ep, secret := e.expect(t, "wrong-secret")
	wrong := rdma.NewSecret()
	peer := e.start(t, "wrong-secret", wrong)
	if got := peer.Dialed(t); !strings.HasPrefix(got, "err auth") {
		t.Fatalf("dial with a wrong secret: %s", got)
	}
	waitLog(t, e.h.Logs, "wrong-secret", rdma.ErrAuth)
	if st := e.l.Stats(); st.HandshakeFailures != 1 || st.Accepted != 0 {
		t.Errorf("listener stats %+v, want one handshake failure and nothing accepted", st)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if ch, err := ep.Accept(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("a channel was attached with a wrong secret: %v %v", ch, err)
	}
	checkSecretNotLogged(t, e.h.Logs, secret, wrong)
	// The right secret still works.
	ok := e.start(t, "wrong-secret", secret)
	ch, err := ep.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if got := ok.Dialed(t); got != "ok dialed" {
		t.Fatalf("dial with the right secret: %s", got)
	}
	checkSecretNotLogged(t, e.h.Logs, secret, wrong)
}

func testUnknownConnection(t *testing.T, e *env) {
	e.expect(t, "known")
	peer := e.start(t, "unknown", rdma.NewSecret())
	if got := peer.Dialed(t); !strings.HasPrefix(got, "err unknown") {
		t.Fatalf("dial an unknown connection ID: %s", got)
	}
	waitLog(t, e.h.Logs, "unknown", rdma.ErrUnknownConnection)
	if st := e.l.Stats(); st.Rejected != 1 || st.Accepted != 0 {
		t.Errorf("listener stats %+v, want one rejection", st)
	}
}

func testSecondAttach(t *testing.T, e *env) {
	ep, secret := e.expect(t, "twice")
	first := e.start(t, "twice", secret)
	ch, err := ep.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if got := first.Dialed(t); got != "ok dialed" {
		t.Fatalf("first dial: %s", got)
	}
	second := e.start(t, "twice", secret)
	if got := second.Dialed(t); !strings.HasPrefix(got, "err attached") {
		t.Fatalf("second dial while the first channel works: %s", got)
	}
	waitLog(t, e.h.Logs, "twice", rdma.ErrAlreadyAttached)
	// Once the first channel ended, the connection ID may attach again.
	wantOK(t, first.Do(t, "close"), "close")
	waitDone(t, ch, "peer closed")
	third := e.start(t, "twice", secret)
	ch3, err := ep.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ch3.Close()
	if got := third.Dialed(t); got != "ok dialed" {
		t.Fatalf("dial after the first channel ended: %s", got)
	}
	m := testMessage(6, 0, 600, 16, 1000, 0)
	if _, err := ch3.Send(ctxT(t), &m); err != nil {
		t.Fatal(err)
	}
	wantOK(t, third.Do(t, "drain 1"), "drain")
	if st := e.l.Stats(); st.Accepted != 2 || st.Rejected != 1 {
		t.Errorf("listener stats %+v, want 2 accepted and 1 rejected", st)
	}
}

// recordingConn records the messages a handshake sends and receives.
type recordingConn struct {
	handshake.Conn
	sent, received [][]byte
}

func (c *recordingConn) WriteMsg(msg []byte) error {
	c.sent = append(c.sent, append([]byte(nil), msg...))
	return c.Conn.WriteMsg(msg)
}

func (c *recordingConn) ReadMsg(buf []byte) ([]byte, error) {
	msg, err := c.Conn.ReadMsg(buf)
	if err == nil {
		c.received = append(c.received, append([]byte(nil), msg...))
	}
	return msg, err
}

// recordHandshake runs a genuine handshake (early or full) for connID on a
// raw connection, records its messages and closes the connection before
// any setup, so that the listener gives this attach up.
func recordHandshake(ctx context.Context, t *testing.T, e *env, connID string, secret *rdma.Secret, early bool) *recordingConn {
	t.Helper()
	conn, closer, err := e.h.RawDial(ctx, e.l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingConn{Conn: conn}
	if err := handshake.Client(rec, e.name, connID, secret, handshake.ClientOptions{Early: early}); err != nil {
		t.Fatalf("genuine handshake (early: %v): %v", early, err)
	}
	_ = closer.Close()
	return rec
}

func testReplay(t *testing.T, e *env) {
	if e.h.RawDial == nil {
		t.Skip("the harness has no raw dialer")
	}
	ctx := ctxT(t)
	_, secret := e.expect(t, "replay")
	rec := recordHandshake(ctx, t, e, "replay", &secret, false)
	if len(rec.sent) != 2 || len(rec.received) != 2 {
		t.Fatalf("recorded %d sent and %d received messages", len(rec.sent), len(rec.received))
	}
	// Replay the dialer's messages on a new connection.
	conn, closer, err := e.h.RawDial(ctx, e.l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	buf := make([]byte, handshake.MaxMessageSize)
	if err := conn.WriteMsg(rec.sent[0]); err != nil {
		t.Fatal(err)
	}
	raw, err := conn.ReadMsg(buf)
	if err != nil {
		t.Fatalf("read challenge: %v", err)
	}
	challenge, err := handshake.Decode(raw)
	if err != nil || challenge.Type != handshake.TypeChallenge {
		t.Fatalf("replayed hello answered with %v %v", challenge, err)
	}
	old, _ := handshake.Decode(rec.received[0])
	if challenge.Nonce == old.Nonce {
		t.Fatal("the listener reused a nonce")
	}
	if err := conn.WriteMsg(rec.sent[1]); err != nil {
		t.Fatal(err)
	}
	if raw, err := conn.ReadMsg(buf); err == nil {
		res, err := handshake.Decode(raw)
		if err != nil || res.Type != handshake.TypeResult || res.Code != handshake.CodeAuth {
			t.Fatalf("replayed response answered with %+v %v, want an auth refusal", res, err)
		}
	}
	waitLog(t, e.h.Logs, "replay", rdma.ErrAuth)
}

// testReplayEarly: a recorded early handshake is refused once the
// connection was admitted, and the genuine dialer still attaches (with the
// full handshake).
func testReplayEarly(t *testing.T, e *env) {
	if e.h.RawDial == nil {
		t.Skip("the harness has no raw dialer")
	}
	ctx := ctxT(t)
	ep, secret := e.expect(t, "replay-early")
	rec := recordHandshake(ctx, t, e, "replay-early", &secret, true)
	if len(rec.sent) != 1 || len(rec.received) != 1 {
		t.Fatalf("recorded %d sent and %d received messages", len(rec.sent), len(rec.received))
	}
	conn, closer, err := e.h.RawDial(ctx, e.l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if err := conn.WriteMsg(rec.sent[0]); err != nil {
		t.Fatal(err)
	}
	raw, err := conn.ReadMsg(make([]byte, handshake.MaxMessageSize))
	if err != nil {
		t.Fatalf("read the answer to a replayed early hello: %v", err)
	}
	if res, err := handshake.Decode(raw); err != nil || res.Type != handshake.TypeResult || res.Code != handshake.CodeEarlyRefused {
		t.Fatalf("replayed early hello answered with %+v %v, want an early refusal", res, err)
	}
	peer := e.start(t, "replay-early", secret)
	ch, err := ep.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if got := peer.Dialed(t); got != "ok dialed" {
		t.Fatalf("the genuine dialer after the replay: %s", got)
	}
	if st := e.l.Stats(); st.Rejected != 0 {
		t.Errorf("listener stats %+v: the refused replay is not a rejection", st)
	}
}

func testCloseLocal(t *testing.T, e *env) {
	ch, peer := e.attach(t, "close-local")
	ctx := ctxT(t)
	m := testMessage(8, 0, 800, 16, 100, 0)
	if _, err := ch.Send(ctx, &m); err != nil {
		t.Fatal(err)
	}
	wantOK(t, peer.Do(t, "drain 1"), "drain")
	if err := ch.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if got := wantOK(t, peer.Do(t, "wait-end"), "wait-end"); got != "peerclosed" {
		t.Errorf("the peer saw %s, want peerclosed", got)
	}
	if got := wantOK(t, peer.Do(t, "recv-end"), "recv-end"); got != "peerclosed 0" {
		t.Errorf("the peer's Recv after the close: %s, want peerclosed 0", got)
	}
	if err := ch.Err(); !errors.Is(err, rdma.ErrClosed) || !rdma.IsCleanClose(err) {
		t.Errorf("Err after Close: %v", err)
	}
	if _, err := ch.Send(ctx, &m); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if err := ch.Recv(ctx, &m); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Recv after Close: %v", err)
	}
	if _, err := ch.RegisterRegion(10); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("RegisterRegion after Close: %v", err)
	}
}

func testClosePeer(t *testing.T, e *env) {
	ch, peer := e.attach(t, "close-peer")
	ctx := ctxT(t)
	wantOK(t, peer.Do(t, "send 2 5000"), "send")
	wantOK(t, peer.Do(t, "close"), "close")
	waitDone(t, ch, "peer closed")
	// What the peer sent before closing still arrives.
	var m rdma.Message
	for i := range 2 {
		if err := ch.Recv(ctx, &m); err != nil {
			t.Fatalf("recv %d after the peer closed: %v", i, err)
		}
		if err := CheckPattern(m.Payload, uint64(7000+i)); err != nil {
			t.Error(err)
		}
	}
	if err := ch.Recv(ctx, &m); !errors.Is(err, rdma.ErrPeerClosed) {
		t.Errorf("recv after the peer closed: %v, want ErrPeerClosed", err)
	}
	if err := ch.Err(); !errors.Is(err, rdma.ErrPeerClosed) || !rdma.IsCleanClose(err) {
		t.Errorf("Err after the peer closed: %v", err)
	}
	out := testMessage(9, 0, 900, 16, 10, 0)
	if _, err := ch.Send(ctx, &out); !errors.Is(err, rdma.ErrPeerClosed) {
		t.Errorf("send after the peer closed: %v, want ErrPeerClosed", err)
	}
}

func testEndpointClose(t *testing.T, e *env) {
	ep, secret := e.expect(t, "endpoint")
	if _, err := e.l.Expect("endpoint", secret); !errors.Is(err, rdma.ErrAlreadyExpected) {
		t.Errorf("second Expect: %v, want ErrAlreadyExpected", err)
	}
	if _, err := e.l.Expect("", secret); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Errorf("Expect with an empty ID: %v", err)
	}
	if _, err := e.l.Expect("zero", rdma.Secret{}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Errorf("Expect with a zero secret: %v", err)
	}
	peer := e.start(t, "endpoint", secret)
	ch, err := ep.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := peer.Dialed(t); got != "ok dialed" {
		t.Fatalf("dial: %s", got)
	}
	// Closing the endpoint closes its channel and refuses new attaches.
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, ch, "endpoint closed")
	if !errors.Is(ch.Err(), rdma.ErrClosed) {
		t.Errorf("channel of a closed endpoint: %v", ch.Err())
	}
	if got := wantOK(t, peer.Do(t, "wait-end"), "wait-end"); got != "peerclosed" {
		t.Errorf("the peer saw %s", got)
	}
	if _, err := ep.Accept(ctxT(t)); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Accept on a closed endpoint: %v", err)
	}
	again := e.start(t, "endpoint", secret)
	if got := again.Dialed(t); !strings.HasPrefix(got, "err unknown") {
		t.Errorf("dial a closed endpoint: %s", got)
	}
	// The connection ID can be expected again.
	ep2, err := e.l.Expect("endpoint", secret)
	if err != nil {
		t.Fatalf("expect again: %v", err)
	}
	_ = ep2.Close()
}
