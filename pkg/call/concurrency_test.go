package call_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/inproc"
	"github.com/tether-mesh/tether/pkg/rdma/shm"
)

// inprocPair opens an inproc channel; server is its other end. A window of
// 0 is the provider's default. Both ends close when the test ends.
func inprocPair(t testing.TB, window int) (client, server rdma.Channel) {
	t.Helper()
	return pair(t, inproc.New(inproc.WithWindow(window)))
}

// pair opens a channel of p; server is its other end. Both ends close when
// the test ends.
func pair(t testing.TB, p rdma.Provider) (client, server rdma.Channel) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l, err := p.Listen(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	secret := rdma.NewSecret()
	ep, err := l.Expect("c1", secret)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan rdma.Channel, 1)
	go func() {
		srv, _ := ep.Accept(ctx)
		accepted <- srv
	}()
	client, err = p.Dial(ctx, l.Addr(), "c1", secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	if server = <-accepted; server == nil {
		t.Fatal("the listener did not accept the channel")
	}
	t.Cleanup(func() { _ = server.Close() })
	return client, server
}

// header builds the rdma header of a message of package call (see doc.go).
func header(kind call.Kind, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{byte(kind)}, id)
}

// received is a call as a raw member received it.
type received struct {
	id      uint64
	payload string
	retry   bool
}

// recvCalls receives n messages on ch and returns them as calls.
func recvCalls(ctx context.Context, t *testing.T, ch rdma.Channel, n int) []received {
	t.Helper()
	var out []received
	var m rdma.Message
	for range n {
		if err := ch.Recv(ctx, &m); err != nil {
			t.Errorf("member: %v", err)
			return out
		}
		if len(m.Header) < 9 || call.Kind(m.Header[0]) != call.KindCall {
			t.Errorf("member: not a call: %x", m.Header)
			return out
		}
		out = append(out, received{binary.BigEndian.Uint64(m.Header[1:9]), string(m.Payload), m.Retry()})
	}
	return out
}

// notifying tells of every message a Caller hands to its channel, before
// the channel takes it, and of every Recv, if receiving is set.
type notifying struct {
	rdma.Channel
	sending   chan<- string // the payload
	receiving chan<- struct{}
}

func (n *notifying) Send(ctx context.Context, m *rdma.Message) (uint64, error) {
	n.sending <- string(m.Payload)
	return n.Channel.Send(ctx, m)
}

func (n *notifying) Recv(ctx context.Context, m *rdma.Message) error {
	if n.receiving != nil {
		n.receiving <- struct{}{}
	}
	return n.Channel.Recv(ctx, m)
}

// TestAnswersInAnyOrder: concurrent calls get their own answers whatever
// the order of the answers, among strays (duplicates, answers to unknown
// calls, messages that are not answers); the caller then makes calls again,
// on the pendings it keeps.
func TestAnswersInAnyOrder(t *testing.T) {
	tests := []struct {
		name  string
		calls int
		order func([]received) []received
		stray bool
	}{
		{"one", 1, slices.Clone[[]received], false},
		{"in order", 8, slices.Clone[[]received], false},
		{"reversed", 8, func(r []received) []received { r = slices.Clone(r); slices.Reverse(r); return r }, false},
		{"more calls than table slots", 40, func(r []received) []received { r = slices.Clone(r); slices.Reverse(r); return r }, false},
		{"with strays", 8, func(r []received) []received {
			odd, even := []received{}, []received{}
			for i, c := range r {
				if i%2 == 0 {
					even = append(even, c)
				} else {
					odd = append(odd, c)
				}
			}
			return append(odd, even...)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ch, srv := inprocPair(t, 0)
			c := call.NewCaller(quiet)
			defer c.Close()
			c.Bind(ch, nil, nil)

			for round := range 2 {
				var wg sync.WaitGroup
				for i := range tt.calls {
					wg.Go(func() {
						p := fmt.Sprintf("%d-%d", round, i)
						if i%3 == 2 {
							p += "-fail" // answered with an error
						}
						reply, err := c.Call(ctx, nil, []byte(p))
						switch {
						case strings.HasSuffix(p, "-fail"):
							if !call.IsRemote(err) || !strings.HasSuffix(err.Error(), "no:"+p) {
								t.Errorf("call %s: %q %v, want the remote error", p, reply, err)
							}
						case err != nil || string(reply) != "re:"+p:
							t.Errorf("call %s: %q %v", p, reply, err)
						}
					})
				}
				calls := recvCalls(ctx, t, srv, tt.calls)
				answer := func(kind call.Kind, id uint64, payload string) {
					if _, err := srv.Send(ctx, &rdma.Message{Header: header(kind, id), Payload: []byte(payload)}); err != nil {
						t.Error(err)
					}
				}
				if tt.stray {
					answer(call.KindReply, 1<<40, "unknown call")
					answer(call.KindCall, 7, "not an answer")
					if _, err := srv.Send(ctx, &rdma.Message{Header: []byte{byte(call.KindReply)}, Payload: []byte("malformed")}); err != nil {
						t.Error(err)
					}
				}
				for _, r := range tt.order(calls) {
					kind, text := call.KindReply, "re:"+r.payload
					if strings.HasSuffix(r.payload, "-fail") {
						kind, text = call.KindError, "no:"+r.payload
					}
					answer(kind, r.id, text)
					if tt.stray {
						answer(call.KindReply, r.id, "a second answer")
					}
				}
				wg.Wait()
				if n := c.Pending(); n != 0 {
					t.Fatalf("round %d: %d calls still pending", round, n)
				}
			}
		})
	}
}

// TestAnswersWhileTheReaderWaits: calls whose answers come before the
// answer of the call that reads the channel return without waiting for it.
func TestAnswersWhileTheReaderWaits(t *testing.T) {
	const others = 5
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ch, srv := inprocPair(t, 0)
	sending, receiving := make(chan string, others+1), make(chan struct{}, others+10)
	c := call.NewCaller(quiet)
	defer c.Close()
	c.Bind(&notifying{Channel: ch, sending: sending, receiving: receiving}, nil, nil)
	start := func(wg *sync.WaitGroup, p string) {
		wg.Go(func() {
			if reply, err := c.Call(ctx, nil, []byte(p)); err != nil || string(reply) != "re:"+p {
				t.Errorf("call %s: %q %v", p, reply, err)
			}
		})
	}
	var first, rest sync.WaitGroup
	start(&first, "reader")
	<-sending
	<-receiving // the first call reads the channel
	for i := range others {
		start(&rest, fmt.Sprint("other-", i))
	}
	for range others {
		<-sending
	}
	calls := recvCalls(ctx, t, srv, others+1)
	for _, r := range calls[1:] {
		if _, err := srv.Send(ctx, &rdma.Message{Header: header(call.KindReply, r.id), Payload: []byte("re:" + r.payload)}); err != nil {
			t.Fatal(err)
		}
	}
	rest.Wait()
	if _, err := srv.Send(ctx, &rdma.Message{Header: header(call.KindReply, calls[0].id), Payload: []byte("re:reader")}); err != nil {
		t.Fatal(err)
	}
	first.Wait()
}

// TestBindWhileCallsWait: calls that wait on a channel that fails, some
// received there (so sent again by Bind) and some not (so replayed with the
// channel's unacknowledged messages), complete on the next channel, which
// sees each once, as a retry.
func TestBindWhileCallsWait(t *testing.T) {
	tests := []struct {
		name              string
		calls, receivedOn int // calls made, and received by the failing member
	}{
		{"one, replayed", 1, 0},
		{"one, sent again", 1, 1},
		{"all replayed", 6, 0},
		{"all sent again", 6, 6},
		{"some of each", 6, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			chA, srvA := inprocPair(t, 0)
			b := newMember(t)
			chB, stopB := b.connect(ctx, "c1")
			defer stopB()
			sending := make(chan string, tt.calls)
			wrappedA := &notifying{Channel: chA, sending: sending}
			c := call.NewCaller(quiet)
			defer c.Close()
			c.Bind(wrappedA, nil, nil)

			var wg sync.WaitGroup
			want := map[string]bool{}
			for i := range tt.calls {
				p := fmt.Sprint("call-", i)
				want["echo::"+p] = true
				wg.Go(func() {
					reply, err := c.Call(ctx, nil, []byte(p))
					if err != nil || string(reply) != "echo::"+p {
						t.Errorf("call %s: %q %v", p, reply, err)
					}
				})
			}
			for range tt.calls {
				<-sending
			}
			recvCalls(ctx, t, srvA, tt.receivedOn)
			_ = srvA.Close() // a fails without answering
			rebind(t, c, wrappedA, chB)
			wg.Wait()

			var seen []string
			for _, s := range b.calls() {
				p, ok := strings.CutSuffix(s, " (retry)")
				if !ok || !want["echo::"+p] {
					t.Errorf("b saw %q, want only retries of the calls", s)
				}
				seen = append(seen, p)
			}
			if slices.Sort(seen); len(slices.Compact(seen)) != tt.calls || len(seen) != len(b.calls()) {
				t.Errorf("b saw %v, want each of %d calls once", b.calls(), tt.calls)
			}
			if n := c.Pending(); n != 0 {
				t.Fatalf("%d calls still pending", n)
			}
		})
	}
}

// TestResentCallsAreNotReused: a call that Bind sends again and that gives
// up while the new channel has no room yet keeps what it sends: new calls
// do not take its place, and the member sees the call as it was made.
func TestResentCallsAreNotReused(t *testing.T) {
	const calls = 3
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	chA, srvA := inprocPair(t, 0)
	chB, srvB := inprocPair(t, 1) // room for one message: the retries wait
	sending := make(chan string, 2*calls)
	wrappedA := &notifying{Channel: chA, sending: sending}
	wrappedB := &notifying{Channel: chB, sending: sending}
	c := call.NewCaller(quiet)
	defer c.Close()
	c.Bind(wrappedA, nil, nil)

	oldCtx, giveUp := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			if _, err := c.Call(oldCtx, nil, fmt.Append(nil, "old-", i)); !errors.Is(err, context.Canceled) {
				t.Errorf("old call %d: %v, want it cancelled", i, err)
			}
		})
	}
	for range calls {
		<-sending
	}
	recvCalls(ctx, t, srvA, calls) // all received: Bind sends them again
	_ = srvA.Close()
	rebind(t, c, wrappedA, wrappedB)
	giveUp()
	wg.Wait()

	newCtx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range calls {
		wg.Go(func() { _, _ = c.Call(newCtx, nil, fmt.Append(nil, "new-", i)) })
	}
	// Every new call is on its way out (or sent) once the old ones are.
	for n := 0; n < calls; {
		if strings.HasPrefix(<-sending, "new-") {
			n++
		}
	}
	got := map[string]bool{}
	for _, r := range recvCalls(ctx, t, srvB, 2*calls) {
		got[fmt.Sprint(r.payload, " retry=", r.retry)] = true
	}
	for i := range calls {
		for _, want := range []string{fmt.Sprint("old-", i, " retry=true"), fmt.Sprint("new-", i, " retry=false")} {
			if !got[want] {
				t.Errorf("the member saw %v, not %q", got, want)
			}
		}
	}
	stop()
	wg.Wait()
}

// TestCloseDuringCalls: Close fails the calls that wait, the reader among
// them once its channel ends, and every later call.
func TestCloseDuringCalls(t *testing.T) {
	for _, calls := range []int{1, 5} {
		t.Run(fmt.Sprint(calls, " calls"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ch, srv := inprocPair(t, 0)
			sending := make(chan string, calls)
			c := call.NewCaller(quiet)
			c.Bind(&notifying{Channel: ch, sending: sending}, nil, nil)
			errs := make(chan error, calls)
			for range calls {
				go func() {
					_, err := c.Call(ctx, nil, []byte("x"))
					errs <- err
				}()
			}
			for range calls {
				<-sending
			}
			c.Close()
			_ = srv.Close() // the reader returns when its channel ends
			for range calls {
				if err := <-errs; !errors.Is(err, call.ErrClosed) {
					t.Errorf("got %v, want ErrClosed", err)
				}
			}
			if _, err := c.Call(ctx, nil, nil); !errors.Is(err, call.ErrClosed) {
				t.Errorf("after Close: %v", err)
			}
		})
	}
}

// TestChannelClosedUnderALoneCall: a lone call reads its channel while its
// answer is on its way; the channel's Close (which on shm waits for the
// reader to leave before it unmaps the rings) returns, and the call, which
// is then no longer alone, waits for the next channel until the caller
// closes.
func TestChannelClosedUnderALoneCall(t *testing.T) {
	for _, p := range []rdma.Provider{inproc.New(), shm.New()} {
		t.Run(p.Name(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ch, srv := pair(t, p)
			received := make(chan struct{})
			go func() { // takes the call, never answers
				var m rdma.Message
				if srv.Recv(ctx, &m) == nil {
					close(received)
					_ = srv.Recv(ctx, &m) // until the channel ends
				}
			}()
			c := call.NewCaller(quiet)
			c.Bind(ch, nil, nil)
			if !call.Idle(c) {
				t.Fatal("a bound caller with nothing to do is not idle")
			}
			errs := make(chan error, 1)
			go func() {
				_, err := c.Call(ctx, nil, []byte("x"))
				errs <- err
			}()
			<-received
			closed := make(chan error, 1)
			go func() { closed <- ch.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatal("the channel's Close did not return under a lone call")
			}
			select {
			case err := <-errs:
				t.Fatalf("the call ended with its channel (%v); it should wait for the next one", err)
			default:
			}
			c.Close()
			if err := <-errs; !errors.Is(err, call.ErrClosed) {
				t.Errorf("got %v, want ErrClosed", err)
			}
		})
	}
}

// TestServeEchoesUnacknowledged: answers that are the requests' own
// payloads stay intact while the caller has not taken them, whether it
// takes each before the next call (ping-pong) or only after many.
func TestServeEchoesUnacknowledged(t *testing.T) {
	tests := []struct {
		name          string
		calls, rounds int // calls sent before the answers are read
	}{
		{"ping-pong", 1, 50},
		{"two at a time", 2, 20},
		{"three at a time", 3, 20},
		{"many at a time", 40, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ch, srv := inprocPair(t, 0)
			served := make(chan struct{})
			go func() {
				defer close(served)
				_ = call.Serve(ctx, srv, func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload[1:], nil }, quiet)
			}()
			id := uint64(0)
			var in rdma.Message
			for round := range tt.rounds {
				for i := range tt.calls {
					id++
					p := fmt.Sprintf("x%d-%d-%s", round, i, strings.Repeat("y", (round*7+i)%100))
					if _, err := ch.Send(ctx, &rdma.Message{Header: header(call.KindCall, id), Payload: []byte(p)}); err != nil {
						t.Fatal(err)
					}
				}
				for i := range tt.calls {
					if err := ch.Recv(ctx, &in); err != nil {
						t.Fatal(err)
					}
					want := fmt.Sprintf("%d-%d-%s", round, i, strings.Repeat("y", (round*7+i)%100))
					if got := string(in.Payload); got != want {
						t.Fatalf("answer %d of round %d: %q, want %q", i, round, got, want)
					}
				}
			}
			_ = ch.Close()
			<-served
		})
	}
}

// gated holds every Recv at a gate, after telling that it was called (the
// call's send is done by then).
type gated struct {
	rdma.Channel
	receiving chan<- struct{}
	gate      <-chan struct{}
}

func (g *gated) Recv(ctx context.Context, m *rdma.Message) error {
	g.receiving <- struct{}{}
	<-g.gate
	return g.Channel.Recv(ctx, m)
}

// retries is a member that echoes and records the retries it sees; it
// allocates nothing for other calls.
type retries struct {
	mu   sync.Mutex
	seen []string
	more chan struct{}
}

// serve serves a new channel until the test ends and returns its client
// end.
func (r *retries) serve(t *testing.T) rdma.Channel {
	ch, srv := inprocPair(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = call.Serve(ctx, srv, func(_ context.Context, req *call.Request) ([]byte, error) {
			if req.Retry {
				r.mu.Lock()
				r.seen = append(r.seen, string(req.Payload))
				r.mu.Unlock()
				select {
				case r.more <- struct{}{}:
				default:
				}
			}
			return req.Payload, nil
		}, quiet)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ch
}

func (r *retries) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// TestLoneCallAcrossBinds: a call made while no other call is pending runs
// without the table of pending calls; the Binds that run while it reads
// must treat it as Bind treats the calls of the table. The call sees the
// Binds only once they are done (its Recv is held at a gate), and then
// completes on the last channel, which sees it once, as a retry, even when
// its caller gave up meanwhile. Afterwards, calls run alone again.
func TestLoneCallAcrossBinds(t *testing.T) {
	tests := []struct {
		name     string
		received bool // the first member received the call (no replay carries it)
		binds    int  // channels the connection moves to while the call reads
		giveUp   bool // the caller gives up after the Binds
	}{
		{name: "replayed by the Bind", binds: 1},
		{name: "received, so sent again", received: true, binds: 1},
		{name: "replayed, then moved again", binds: 2},
		{name: "received, then moved twice", received: true, binds: 2},
		{name: "sent again though its caller gave up", received: true, binds: 1, giveUp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			chA, srvA := inprocPair(t, 0)
			receiving, gate := make(chan struct{}, 1), make(chan struct{})
			a := &gated{Channel: chA, receiving: receiving, gate: gate}
			c := call.NewCaller(quiet)
			defer c.Close()
			c.Bind(a, nil, nil)

			callCtx, giveUp := context.WithCancel(ctx)
			defer giveUp()
			type result struct {
				reply string
				err   error
			}
			done := make(chan result, 1)
			go func() {
				reply, err := c.Call(callCtx, nil, []byte("lone"))
				done <- result{string(reply), err}
			}()
			<-receiving // sent on a; its Recv waits at the gate
			if n := c.Pending(); n != 1 {
				t.Errorf("Pending %d while the call reads, want 1", n)
			}
			if tt.received {
				recvCalls(ctx, t, srvA, 1)
			}
			_ = srvA.Close()
			members := make([]*retries, tt.binds)
			var old rdma.Channel = a
			for i := range members {
				members[i] = &retries{more: make(chan struct{}, 1)}
				ch := members[i].serve(t)
				rebind(t, c, old, ch)
				old = ch
			}
			if tt.giveUp {
				giveUp()
			}
			close(gate)

			r := <-done
			last := members[len(members)-1]
			switch {
			case tt.giveUp:
				if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("got %q, %v; want the caller's context error", r.reply, r.err)
				}
				// Sent again all the same, as Bind sends the calls of the table.
				deadline := time.After(testTimeout)
				for len(last.get()) == 0 {
					select {
					case <-last.more:
					case <-deadline:
						t.Fatal("the call was not sent again")
					}
				}
			case r.err != nil || r.reply != "lone":
				t.Fatalf("got %q, %v", r.reply, r.err)
			}
			// The last channel sees it once; one before may have taken a
			// replay and lost its answer with its channel.
			for i, m := range members {
				got := fmt.Sprint(m.get())
				if got != "[lone]" && (m == last || got != "[]") {
					t.Errorf("member %d saw retries %s, want [lone]%s", i+1, got, map[bool]string{false: " or none"}[m == last])
				}
			}
			if n := c.Pending(); n != 0 {
				t.Errorf("%d calls pending at the end", n)
			}
			if !call.Idle(c) {
				t.Error("the caller is not ready for a lone call")
			}
			// The next calls run alone again, and allocate nothing.
			reply := make([]byte, 0, 64)
			if allocs := testing.AllocsPerRun(100, func() {
				var err error
				if reply, err = c.AppendCall(ctx, reply[:0], nil, []byte("next")); err != nil || string(reply) != "next" {
					t.Fatalf("next call: %q, %v", reply, err)
				}
			}); allocs != 0 {
				t.Errorf("a call after the move allocates %v times", allocs)
			}
		})
	}
}
