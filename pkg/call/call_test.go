package call_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/inproc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

var quiet = func() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}()

// member is one end of a connection that serves calls with a handler.
type member struct {
	t        *testing.T
	listener rdma.Listener
	mu       sync.Mutex
	seen     []string      // "payload" or "payload (retry)"
	more     chan struct{} // takes a token when seen grows
	gate     chan struct{}
}

func newMember(t *testing.T) *member {
	t.Helper()
	l, err := inproc.New().Listen(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return &member{t: t, listener: l, more: make(chan struct{}, 1)}
}

func (m *member) handle(ctx context.Context, req *call.Request) ([]byte, error) {
	s := string(req.Payload)
	if req.Retry {
		s += " (retry)"
	}
	if req.OneWay {
		s += " (one-way)"
	}
	m.mu.Lock()
	m.seen = append(m.seen, s)
	gate := m.gate
	m.mu.Unlock()
	select {
	case m.more <- struct{}{}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if string(req.Payload) == "fail" {
		return nil, errors.New("refused")
	}
	return append([]byte("echo:"+string(req.Header)+":"), req.Payload...), nil
}

// waitCalls waits until the handler saw n messages, or ctx ends: a
// message is acknowledged when the member receives it, before the handler
// records it.
func (m *member) waitCalls(ctx context.Context, n int) []string {
	for {
		if seen := m.calls(); len(seen) >= n {
			return seen
		}
		select {
		case <-m.more:
		case <-ctx.Done():
			return m.calls()
		}
	}
}

func (m *member) calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.seen...)
}

// connect opens a channel for connID to the member and serves it there.
func (m *member) connect(ctx context.Context, connID string) (rdma.Channel, func()) {
	m.t.Helper()
	secret := rdma.NewSecret()
	ep, err := m.listener.Expect(connID, secret)
	if err != nil {
		m.t.Fatal(err)
	}
	served := make(chan struct{})
	serveCtx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(served)
		srv, err := ep.Accept(serveCtx)
		if err != nil {
			return
		}
		_ = call.Serve(serveCtx, srv, m.handle, quiet)
		_ = srv.Close()
	}()
	ch, err := inproc.New().Dial(ctx, m.listener.Addr(), connID, secret)
	if err != nil {
		m.t.Fatal(err)
	}
	return ch, func() {
		_ = ep.Close() // the channel first: nothing more goes out, not even an answer
		cancel()
		<-served
	}
}

// caller returns a caller bound to a new channel of m for connection c1,
// and what closes both (the caller first).
func (m *member) caller(ctx context.Context) (*call.Caller, func()) {
	m.t.Helper()
	ch, stop := m.connect(ctx, "c1")
	c := call.NewCaller(quiet)
	c.Bind(ch, nil, nil)
	return c, func() {
		c.Close()
		stop()
	}
}

// rebind does what the rdma client element does when a connection moves:
// the old channel's unacknowledged messages go again on the new one, then
// the old one closes, then the caller learns of the change.
func rebind(t *testing.T, c *call.Caller, old, ch rdma.Channel) {
	t.Helper()
	replayed := old.Unacked()
	for i := range replayed {
		replayed[i].Flags |= rdma.FlagRetry
		if _, err := ch.Send(context.Background(), &replayed[i]); err != nil {
			t.Fatal(err)
		}
	}
	_ = old.Close()
	c.Bind(ch, old, replayed)
}

func TestCallsAndSends(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m := newMember(t)
	c, stop := m.caller(ctx)
	defer stop()

	tests := []struct {
		name    string
		header  string
		payload string
		want    string
		remote  bool
	}{
		{"echo", "h", "ping", "echo:h:ping", false},
		{"empty", "", "", "echo::", false},
		{"handler error", "", "fail", "call: the handler failed: refused", true},
	}
	for _, tt := range tests {
		reply, err := c.Call(ctx, []byte(tt.header), []byte(tt.payload))
		switch {
		case tt.remote:
			if !call.IsRemote(err) || err.Error() != tt.want {
				t.Fatalf("%s: got %v, want the remote error %q", tt.name, err, tt.want)
			}
		case err != nil || string(reply) != tt.want:
			t.Fatalf("%s: got %q %v, want %q", tt.name, reply, err, tt.want)
		}
	}
	if err := c.Send(ctx, nil, []byte("note")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(m.waitCalls(ctx, 4)); got != "[ping  fail note (one-way)]" {
		t.Fatalf("member saw %s", got)
	}
	if _, err := c.Call(ctx, make([]byte, call.MaxHeaderSize+1), nil); err == nil {
		t.Fatal("an oversized header was accepted")
	}
}

// TestEchoedPayloadsStayIntact: a handler that answers with the request's
// own payload, while many calls are in flight, gets every answer right.
func TestEchoedPayloadsStayIntact(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l, err := inproc.New().Listen(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	secret := rdma.NewSecret()
	ep, err := l.Expect("c1", secret)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv, err := ep.Accept(ctx)
		if err != nil {
			return
		}
		_ = call.Serve(ctx, srv, func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil }, quiet)
	}()
	ch, err := inproc.New().Dial(ctx, l.Addr(), "c1", secret)
	if err != nil {
		t.Fatal(err)
	}
	c := call.NewCaller(quiet)
	c.Bind(ch, nil, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				p := fmt.Sprintf("%d-%d-%s", w, i, strings.Repeat("x", i%50))
				if reply, err := c.Call(ctx, nil, []byte(p)); err != nil || string(reply) != p {
					t.Errorf("call %s answered %q %v", p, reply, err)
					return
				}
			}
		})
	}
	wg.Wait()
	c.Close()
	_ = ch.Close()
	_ = ep.Close()
	<-served
}

func TestConcurrentCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m := newMember(t)
	c, stop := m.caller(ctx)
	defer stop()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				p := fmt.Sprintf("%d-%d", w, i)
				reply, err := c.Call(ctx, nil, []byte(p))
				if err != nil || string(reply) != "echo::"+p {
					t.Errorf("call %s: %q %v", p, reply, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if c.Pending() != 0 {
		t.Fatalf("%d calls still pending", c.Pending())
	}
}

func TestCallsSurviveAChangeOfChannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	a, b := newMember(t), newMember(t)
	a.gate = make(chan struct{}) // a takes the first call and never answers
	defer close(a.gate)
	chA, stopA := a.connect(ctx, "c1")
	chB, stopB := b.connect(ctx, "c1")
	defer stopB()
	c := call.NewCaller(quiet)
	defer c.Close()
	c.Bind(chA, nil, nil)

	type result struct {
		reply string
		err   error
	}
	results := make(chan result, 2)
	for _, p := range []string{"first", "second"} {
		go func() {
			reply, err := c.Call(ctx, nil, []byte(p))
			results <- result{string(reply), err}
		}()
		// Wait until the call is out on a's channel before the next one, so
		// that "first" is the one a's handler holds.
		deadline := time.After(testTimeout)
		for chA.Stats().Sent < map[string]uint64{"first": 1, "second": 2}[p] {
			select {
			case <-deadline:
				t.Fatal("the call never went out")
			case <-time.After(time.Millisecond): // polls a counter that has no event
			}
		}
	}
	// "first" was received by a (acknowledged, never answered); "second"
	// waits unacknowledged behind it. a fails; the connection moves to b.
	stopA()
	rebind(t, c, chA, chB)
	got := map[string]bool{}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatal(r.err)
			}
			got[r.reply] = true
		case <-time.After(testTimeout):
			t.Fatalf("calls did not complete after the move; b saw %v", b.calls())
		}
	}
	if !got["echo::first"] || !got["echo::second"] {
		t.Fatalf("answers %v", got)
	}
	// b sees each call once, both marked as retries.
	seen := fmt.Sprint(b.calls())
	if seen != "[first (retry) second (retry)]" && seen != "[second (retry) first (retry)]" {
		t.Fatalf("b saw %s", seen)
	}
}

func TestACallEndsWithItsContext(t *testing.T) {
	c := call.NewCaller(quiet)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, nil, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call without a channel: %v, want DeadlineExceeded", err)
	}
	if c.Pending() != 0 {
		t.Fatal("a call that timed out stays pending")
	}
}

func TestCloseFailsWaitingCalls(t *testing.T) {
	c := call.NewCaller(quiet)
	errs := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), nil, []byte("x"))
		errs <- err
	}()
	c.Close() // before or after the call registered: either way it ends

	if err := <-errs; !errors.Is(err, call.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if _, err := c.Call(context.Background(), nil, nil); !errors.Is(err, call.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
