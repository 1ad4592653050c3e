package rdma_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/rdma"
)

func TestSecretNeverPrinted(t *testing.T) {
	s := rdma.NewSecret()
	if s.IsZero() {
		t.Fatal("NewSecret returned the zero secret")
	}
	if s == rdma.NewSecret() {
		t.Fatal("two fresh secrets are equal")
	}
	forms := []string{s.Encode(), hex.EncodeToString(s[:]), string(s[:])}
	var logged bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logged)
	log.SetFormatter(&logrus.JSONFormatter{})
	log.WithField("secret", s).Info("json")
	log.SetFormatter(&logrus.TextFormatter{})
	log.WithField("secret", s).Info("text")
	js, err := json.Marshal(map[string]any{"s": s})
	if err != nil {
		t.Fatal(err)
	}
	outputs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %x %X %q %d", s, s, s, s, s, s, s, s),
		s.String(), s.GoString(), string(js), logged.String(),
		fmt.Sprint(struct{ S rdma.Secret }{s}), fmt.Sprintf("%v", &s),
	}
	for _, out := range outputs {
		for _, form := range forms {
			if strings.Contains(out, form) || strings.Contains(strings.ToLower(out), strings.ToLower(hex.EncodeToString(s[:4]))) {
				t.Errorf("the secret leaks in %q", out)
			}
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("no redaction in %q", out)
		}
	}
}

func TestSecretEncodeParse(t *testing.T) {
	s := rdma.NewSecret()
	got, err := rdma.ParseSecret(s.Encode())
	if err != nil || got != s {
		t.Fatalf("round trip: %v, equal %v", err, got == s)
	}
	for _, bad := range []string{"", "short", s.Encode() + "A", s.Encode()[1:], strings.Repeat("!", 43), s.Encode() + "=="} {
		if _, err := rdma.ParseSecret(bad); !errors.Is(err, rdma.ErrInvalidArgument) {
			t.Errorf("ParseSecret(%q): %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestMessage(t *testing.T) {
	tests := []struct {
		name string
		m    rdma.Message
		want error
	}{
		{"empty", rdma.Message{}, nil},
		{"maximal", rdma.Message{Header: make([]byte, rdma.MaxHeaderSize), Payload: make([]byte, rdma.MaxPayloadSize), Flags: rdma.FlagRetry}, nil},
		{"header too large", rdma.Message{Header: make([]byte, rdma.MaxHeaderSize+1)}, rdma.ErrTooLarge},
		{"payload too large", rdma.Message{Payload: make([]byte, rdma.MaxPayloadSize+1)}, rdma.ErrTooLarge},
		{"unknown flag", rdma.Message{Flags: 2}, rdma.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.m.Validate(); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPrepareReusesAndDetachGivesUp(t *testing.T) {
	var m rdma.Message
	p := m.Prepare(7, rdma.FlagRetry, []byte("hdr"), 100)
	if len(p) != 100 || m.Seq != 7 || !m.Retry() || string(m.Header) != "hdr" || &m.Payload[0] != &p[0] {
		t.Fatalf("Prepare set %+v", m)
	}
	first := &p[0]
	if q := m.Prepare(8, 0, nil, 50); &q[0] != first || len(m.Header) != 0 || m.Retry() {
		t.Fatal("a smaller message did not reuse the buffer")
	}
	// A payload set by the caller is not the receive buffer: Detach keeps it.
	own := make([]byte, 10)
	m.Payload = own
	m.Detach()
	if q := m.Prepare(9, 0, nil, 50); &q[0] != first {
		t.Fatal("Detach gave the buffer up for a foreign payload")
	}
	// A received payload that is kept (sent on): the next Prepare uses a new buffer.
	kept := m.Payload
	m.Detach()
	if q := m.Prepare(10, 0, nil, 50); &q[0] == &kept[0] {
		t.Fatal("Prepare reused a detached buffer")
	}
	// A header the caller set is never written by Prepare.
	hdr := []byte("mine")
	m.Header = hdr
	m.Prepare(11, 0, []byte("theirs"), 0)
	if string(hdr) != "mine" {
		t.Fatal("Prepare wrote into the caller's header")
	}
}

// TestLend: a payload that fits in the lent buffer is received there; one
// that does not, or after Lend(nil), goes to the message's own buffer.
func TestLend(t *testing.T) {
	lent := make([]byte, 0, 8)
	tests := []struct {
		name   string
		lend   []byte
		n      int
		inLent bool
	}{
		{"fits", lent, 8, true},
		{"smaller", lent, 3, true},
		{"too large", lent, 9, false},
		{"taken back", nil, 3, false},
	}
	for _, tt := range tests {
		var m rdma.Message
		m.Lend(tt.lend)
		p := m.Prepare(1, 0, []byte("h"), tt.n)
		if len(p) != tt.n || &m.Payload[0] != &p[0] || string(m.Header) != "h" {
			t.Fatalf("%s: Prepare set %+v", tt.name, m)
		}
		if got := &p[0] == &lent[:1][0]; got != tt.inLent {
			t.Fatalf("%s: payload in the lent buffer = %v, want %v", tt.name, got, tt.inLent)
		}
	}
}

func TestValidateConnID(t *testing.T) {
	for _, tt := range []struct {
		id string
		ok bool
	}{{"", false}, {"a", true}, {strings.Repeat("x", rdma.MaxConnIDSize), true}, {strings.Repeat("x", rdma.MaxConnIDSize+1), false}} {
		if err := rdma.ValidateConnID(tt.id); (err == nil) != tt.ok {
			t.Errorf("ValidateConnID(%d bytes) = %v", len(tt.id), err)
		}
	}
}

func TestIsCleanClose(t *testing.T) {
	for _, tt := range []struct {
		err   error
		clean bool
	}{
		{fmt.Errorf("x: %w", rdma.ErrClosed), true},
		{fmt.Errorf("x: %w", rdma.ErrPeerClosed), true},
		{fmt.Errorf("x: %w", rdma.ErrPeerLost), false},
		{fmt.Errorf("x: %w", rdma.ErrProtocol), false},
		{nil, false},
	} {
		if got := rdma.IsCleanClose(tt.err); got != tt.clean {
			t.Errorf("IsCleanClose(%v) = %v", tt.err, got)
		}
	}
}

type fakeProvider struct{ name string }

func (f fakeProvider) Name() string { return f.name }
func (fakeProvider) Listen(context.Context, string) (rdma.Listener, error) {
	return nil, errors.New("fake")
}

func (fakeProvider) Dial(context.Context, string, string, rdma.Secret) (rdma.Channel, error) {
	return nil, errors.New("fake")
}

func TestRegistry(t *testing.T) {
	r, err := rdma.NewRegistry(fakeProvider{"tcp"}, fakeProvider{"inproc"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Names(), ","); got != "inproc,tcp" {
		t.Errorf("Names() = %s", got)
	}
	if p, err := r.Lookup("tcp"); err != nil || p.Name() != "tcp" {
		t.Errorf("Lookup(tcp) = %v, %v", p, err)
	}
	if _, err := r.Lookup("verbs"); !errors.Is(err, rdma.ErrUnknownProvider) {
		t.Errorf("Lookup(verbs) = %v", err)
	}
	if err := r.Register(fakeProvider{"tcp"}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Errorf("registering tcp twice: %v", err)
	}
	if err := r.Register(fakeProvider{""}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Errorf("registering an empty name: %v", err)
	}
	if _, err := rdma.NewRegistry(fakeProvider{"a"}, fakeProvider{"a"}); err == nil {
		t.Error("NewRegistry accepted a duplicate")
	}
	var zero rdma.Registry
	if err := zero.Register(fakeProvider{"shm"}); err != nil {
		t.Errorf("the zero Registry: %v", err)
	}
}
