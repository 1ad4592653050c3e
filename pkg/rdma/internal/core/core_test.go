package core

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/internal/handshake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeChannel is an rdma.Channel that only has a life.
type fakeChannel struct {
	rdma.Channel
	life   *Life
	closed int
}

func newFake() *fakeChannel { return &fakeChannel{life: NewLife()} }

func (f *fakeChannel) Done() <-chan struct{} { return f.life.Done() }
func (f *fakeChannel) Close() error {
	f.closed++
	f.life.End(rdma.ErrClosed)
	return nil
}

func TestTableAttachRules(t *testing.T) {
	tb := NewTable()
	secret := rdma.NewSecret()
	ep, err := tb.Expect("a", secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Expect("a", secret); !errors.Is(err, rdma.ErrAlreadyExpected) {
		t.Errorf("second Expect: %v", err)
	}
	if s, ok := tb.Secret("a"); !ok || s != secret {
		t.Error("Secret(a) lost")
	}
	if _, ok := tb.Secret("b"); ok {
		t.Error("Secret(b) found")
	}
	if _, err := tb.Admit("b", false); !errors.Is(err, rdma.ErrUnknownConnection) {
		t.Errorf("Admit(b): %v", err)
	}
	first, err := tb.Admit("a", true) // the first attach may be early
	if err != nil {
		t.Fatal(err)
	}
	// While the first attach is being set up, a second one is refused.
	if _, err := tb.Admit("a", false); !errors.Is(err, rdma.ErrAlreadyAttached) {
		t.Errorf("Admit during setup: %v", err)
	}
	ch := newFake()
	if err := first.Deliver(ch); err != nil {
		t.Fatal(err)
	}
	if err := first.Deliver(ch); err == nil {
		t.Error("a ticket delivered twice")
	}
	// Waiting to be accepted, then accepted: still refused.
	if _, err := tb.Admit("a", false); !errors.Is(err, rdma.ErrAlreadyAttached) {
		t.Errorf("Admit with a pending channel: %v", err)
	}
	got, err := ep.Accept(context.Background())
	if err != nil || got != ch {
		t.Fatalf("Accept: %v %v", got, err)
	}
	if _, err := tb.Admit("a", false); !errors.Is(err, rdma.ErrAlreadyAttached) {
		t.Errorf("Admit with a live channel: %v", err)
	}
	// Once the channel ended, the peer may attach again, but not early.
	ch.life.End(rdma.ErrPeerLost)
	if _, err := tb.Admit("a", true); !errors.Is(err, handshake.ErrEarlyRefused) {
		t.Errorf("early Admit after a first channel: %v", err)
	}
	again, err := tb.Admit("a", false)
	if err != nil {
		t.Fatalf("Admit after the channel ended: %v", err)
	}
	again.Cancel()
	third, err := tb.Admit("a", false)
	if err != nil {
		t.Fatalf("Admit after a cancelled ticket: %v", err)
	}
	ch2 := newFake()
	if err := third.Deliver(ch2); err != nil {
		t.Fatal(err)
	}
	if got, _ := ep.Accept(context.Background()); got != ch2 || ch.closed != 1 {
		t.Errorf("the new channel replaces the dead one (closed %d)", ch.closed)
	}
	if st := tb.Stats(); st.Accepted != 2 {
		t.Errorf("stats %+v", st)
	}
	// Closing the endpoint closes its channel and forgets the ID.
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	if ch2.closed != 1 || tb.Len() != 0 {
		t.Errorf("after endpoint close: closed %d, %d expected", ch2.closed, tb.Len())
	}
	if _, err := ep.Accept(context.Background()); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Accept after close: %v", err)
	}
}

func TestTicketOnClosedEndpoint(t *testing.T) {
	tb := NewTable()
	ep, _ := tb.Expect("a", rdma.NewSecret())
	tk, err := tb.Admit("a", false)
	if err != nil {
		t.Fatal(err)
	}
	_ = ep.Close()
	ch := newFake()
	if err := tk.Deliver(ch); !errors.Is(err, rdma.ErrClosed) || ch.closed != 1 {
		t.Errorf("deliver to a closed endpoint: %v, closed %d", err, ch.closed)
	}
}

func TestTableClose(t *testing.T) {
	tb := NewTable()
	ep, _ := tb.Expect("a", rdma.NewSecret())
	tk, _ := tb.Admit("a", false)
	ch := newFake()
	_ = tk.Deliver(ch)
	accepted := make(chan error, 1)
	ep2, _ := tb.Expect("b", rdma.NewSecret())
	go func() {
		_, err := ep2.Accept(context.Background())
		accepted <- err
	}()
	tb.Close()
	if ch.closed != 1 {
		t.Error("pending channel not closed")
	}
	if err := <-accepted; !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("blocked Accept: %v", err)
	}
	if _, err := tb.Expect("c", rdma.NewSecret()); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Expect after close: %v", err)
	}
	_ = ep.Close()
}

func TestExpectValidates(t *testing.T) {
	tb := NewTable()
	if _, err := tb.Expect("", rdma.NewSecret()); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Error(err)
	}
	if _, err := tb.Expect("x", rdma.Secret{}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Error(err)
	}
}

func TestHandshakeFailed(t *testing.T) {
	tb := NewTable()
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	for _, err := range []error{rdma.ErrAuth, rdma.ErrProtocol, errors.New("eof"), rdma.ErrUnknownConnection, rdma.ErrAlreadyAttached, handshake.ErrEarlyRefused} {
		tb.HandshakeFailed(log, err)
	}
	warnings := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warnings++
		}
	}
	if warnings != 5 || len(hook.AllEntries()) != 6 {
		t.Errorf("%d warnings in %d entries, want 5 in 6 (an early refusal is debug)", warnings, len(hook.AllEntries()))
	}
	tb.CountProtocolError()
	if st := tb.Stats(); st.HandshakeFailures != 3 || st.Rejected != 2 || st.ProtocolErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestRetention(t *testing.T) {
	r := NewRetention(3)
	for i := range 5 {
		if r.Full() {
			r.AckUpTo(r.Front().Seq)
		}
		m := rdma.Message{Flags: rdma.Flags(i % 2), Header: []byte{byte(i)}, Payload: make([]byte, i)}
		r.Push(&m, uint64(10+i), uint64(i))
	}
	if r.Len() != 3 || r.Bytes() != 2+3+4 || r.Front().Seq != 12 || r.Back().Seq != 14 {
		t.Fatalf("len %d bytes %d front %d back %d", r.Len(), r.Bytes(), r.Front().Seq, r.Back().Seq)
	}
	ms := r.Messages()
	for i, m := range ms {
		if m.Seq != uint64(12+i) || len(m.Payload) != 2+i || m.Header[0] != byte(2+i) || m.Flags != rdma.Flags(i%2) {
			t.Errorf("message %d: %+v", i, m)
		}
	}
	if n := r.AckUpTo(13); n != 2 || r.Len() != 1 || r.Bytes() != 4 {
		t.Errorf("AckUpTo: %d, len %d bytes %d", n, r.Len(), r.Bytes())
	}
	r.AckUpTo(100)
	if r.Front() != nil || r.Back() != nil || len(r.Messages()) != 0 {
		t.Error("not empty")
	}
}

// TestRetentionGrows: the ring starts small and grows, up to the capacity,
// when pushes find it full, keeping the messages in order however the
// ring had wrapped around.
func TestRetentionGrows(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		popEvery int // pop the oldest after every popEvery pushes (0: never)
	}{
		{name: "fills to a capacity past the first ring", capacity: 100},
		{name: "capacity under the first ring", capacity: 5},
		{name: "capacity not a power of two", capacity: 37},
		{name: "grows while wrapped around", capacity: 64, popEvery: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRetention(tt.capacity)
			if r.Cap() != tt.capacity {
				t.Fatalf("Cap %d, want %d", r.Cap(), tt.capacity)
			}
			var want []uint64
			for seq := uint64(1); !r.Full(); seq++ {
				m := rdma.Message{Header: []byte{byte(seq)}, Payload: []byte{byte(seq), 1}}
				r.Push(&m, seq, seq)
				want = append(want, seq)
				if tt.popEvery > 0 && seq%uint64(tt.popEvery) == 0 {
					r.Pop()
					want = want[1:]
				}
			}
			if r.Len() != tt.capacity || len(r.ring) != tt.capacity {
				t.Fatalf("full at %d messages in a ring of %d, want %d", r.Len(), len(r.ring), tt.capacity)
			}
			var got []uint64
			r.Each(func(e *Entry) {
				if e.Hdr[0] != byte(e.Seq) || e.Payload[0] != byte(e.Seq) || e.Aux != e.Seq {
					t.Errorf("message %d holds header %d, payload %d, aux %d", e.Seq, e.Hdr[0], e.Payload[0], e.Aux)
				}
				got = append(got, e.Seq)
			})
			if !slices.Equal(got, want) {
				t.Fatalf("held %v, want %v", got, want)
			}
			if r.Bytes() != 2*len(want) {
				t.Errorf("Bytes %d, want %d", r.Bytes(), 2*len(want))
			}
			if n := r.AckUpTo(want[len(want)-1]); n != len(want) || r.Len() != 0 {
				t.Errorf("AckUpTo dropped %d of %d, %d left", n, len(want), r.Len())
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() {
		r := NewRetention(initialRetention)
		m := rdma.Message{Payload: []byte("x")}
		for seq := range uint64(initialRetention) {
			r.Push(&m, seq+1, 0)
		}
	}); n > 2 {
		t.Errorf("filling the first ring allocates %v times, want the Retention and its ring only", n)
	}
}

func TestRetentionMessagesAreCopies(t *testing.T) {
	r := NewRetention(4)
	sent := []rdma.Message{
		{Header: []byte("h1"), Payload: []byte("first")},
		{Payload: nil},
		{Header: []byte("h3"), Payload: []byte("third")},
	}
	for i := range sent {
		r.Push(&sent[i], uint64(1+i), 0)
	}
	ms := r.Messages()
	// The sender reuses its buffers; the copies keep what was sent.
	for i := range sent {
		for j := range sent[i].Header {
			sent[i].Header[j] = 'x'
		}
		for j := range sent[i].Payload {
			sent[i].Payload[j] = 'x'
		}
	}
	// Appending to one copy does not spill into the next.
	_ = append(ms[0].Payload, "!!!!"...)
	_ = append(ms[0].Header, "!!!!"...)
	want := []struct{ hdr, payload string }{{"h1", "first"}, {"", ""}, {"h3", "third"}}
	for i, m := range ms {
		if m.Seq != uint64(1+i) || string(m.Header) != want[i].hdr || string(m.Payload) != want[i].payload {
			t.Errorf("message %d: seq %d header %q payload %q, want %d %q %q", i, m.Seq, m.Header, m.Payload, 1+i, want[i].hdr, want[i].payload)
		}
	}
	if ms[1].Header != nil || ms[1].Payload != nil {
		t.Errorf("empty header and payload copied as %#v, %#v; want nil", ms[1].Header, ms[1].Payload)
	}
}

func TestSem(t *testing.T) {
	s := NewSem()
	if err := s.Acquire(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if s.TryAcquire() {
		t.Fatal("acquired twice")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Acquire(ctx, nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context: %v", err)
	}
	done := make(chan struct{})
	close(done)
	if err := s.Acquire(context.Background(), done, func() error { return rdma.ErrClosed }); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Acquire after done: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- s.Acquire(context.Background(), nil, nil) }()
	s.Release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter was not woken by Release")
	}
	s.Release()
}

func TestLifeAndNotifier(t *testing.T) {
	l := NewLife()
	if l.Ended() || l.Err() != nil {
		t.Fatal("born ended")
	}
	if !l.End(rdma.ErrPeerLost) || l.End(rdma.ErrClosed) {
		t.Fatal("End reported wrongly")
	}
	<-l.Done()
	if !errors.Is(l.Err(), rdma.ErrPeerLost) || !l.Ended() {
		t.Fatal("the first end does not stick")
	}
	var n Notifier
	n.Broadcast() // nobody waits: nothing happens
	w1, w2 := n.Wait(), n.Wait()
	n.Broadcast()
	<-w1
	<-w2
}

func TestDialError(t *testing.T) {
	for _, kept := range []error{rdma.ErrAuth, rdma.ErrUnknownConnection, rdma.ErrAlreadyAttached, rdma.ErrRejected, rdma.ErrProtocol, rdma.ErrUnreachable} {
		if err := DialError(kept); !errors.Is(err, kept) || err.Error() != kept.Error() {
			t.Errorf("%v became %v", kept, err)
		}
	}
	if err := DialError(errors.New("EOF")); !errors.Is(err, rdma.ErrPeerLost) {
		t.Errorf("a broken connection: %v", err)
	}
}
