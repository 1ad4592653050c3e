package handshake

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// pipePair returns two connected handshake connections over net.Pipe.
func pipePair(t *testing.T) (StreamConn, StreamConn) {
	a, b := net.Pipe()
	t.Cleanup(func() {
		_ = a.Close()
		_ = b.Close()
	})
	return StreamConn{RW: a}, StreamConn{RW: b}
}

// socketPair returns two connected handshake connections over a unix
// stream socket pair: unlike net.Pipe, a write does not wait for the
// reader, as with the providers' sockets.
func socketPair(t *testing.T) (StreamConn, StreamConn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		t.Cleanup(func() { _ = c.Close() })
	}
	return StreamConn{RW: conns[0]}, StreamConn{RW: conns[1]}
}

type result struct {
	connID string
	err    error
}

// run runs a client and a server against each other and returns both
// errors, and whether admit was told of an early exchange.
func run(t *testing.T, clientSecret, serverSecret rdma.Secret, connID string, known bool, admit error, early bool) (result, bool, error) {
	t.Helper()
	c, s := pipePair(t)
	done := make(chan result, 1)
	admittedEarly := false
	go func() {
		id, err := Server(s, "tcp", func(id string) (rdma.Secret, bool) {
			if !known || id != connID {
				return rdma.Secret{}, false
			}
			return serverSecret, true
		}, func(_ string, early bool) error { admittedEarly = early; return admit }, nil)
		// A server that refused closes, as the providers do.
		_ = s.RW.(net.Conn).Close()
		done <- result{id, err}
	}()
	err := Client(c, "tcp", connID, &clientSecret, ClientOptions{Early: early})
	_ = c.RW.(net.Conn).Close()
	res := <-done
	return res, admittedEarly, err
}

func TestHandshake(t *testing.T) {
	secret, other := rdma.NewSecret(), rdma.NewSecret()
	type handshakeCase struct {
		name          string
		clientSecret  rdma.Secret
		known         bool
		admit         error
		wantClientErr error
		wantServerErr error
	}
	tests := []handshakeCase{
		{"ok", secret, true, nil, nil, nil},
		{"wrong secret", other, true, nil, rdma.ErrAuth, rdma.ErrAuth},
		{"unknown connection", secret, false, nil, rdma.ErrUnknownConnection, rdma.ErrUnknownConnection},
		{"already attached", secret, true, rdma.ErrAlreadyAttached, rdma.ErrAlreadyAttached, rdma.ErrAlreadyAttached},
		{"refused", secret, true, rdma.ErrRejected, rdma.ErrRejected, rdma.ErrRejected},
	}
	for _, early := range []bool{false, true} {
		for _, tt := range append(tests, handshakeCase{"early refused", secret, true, ErrEarlyRefused, ErrEarlyRefused, ErrEarlyRefused}) {
			t.Run(fmt.Sprintf("%s/early=%v", tt.name, early), func(t *testing.T) {
				res, admittedEarly, cerr := run(t, tt.clientSecret, secret, "conn-1", tt.known, tt.admit, early)
				if !errors.Is(cerr, tt.wantClientErr) || (tt.wantClientErr == nil && cerr != nil) {
					t.Errorf("client: %v, want %v", cerr, tt.wantClientErr)
				}
				if !errors.Is(res.err, tt.wantServerErr) || (tt.wantServerErr == nil && res.err != nil) {
					t.Errorf("server: %v, want %v", res.err, tt.wantServerErr)
				}
				if res.connID != "conn-1" {
					t.Errorf("server saw connection ID %q", res.connID)
				}
				if admittedEarly != (early && tt.known && tt.clientSecret == secret) {
					t.Errorf("admit told early=%v", admittedEarly)
				}
			})
		}
	}
}

// TestThen: what the dialer sends after its last handshake message reaches
// the server after the server's verdict was written, in both exchanges,
// and a failed Then is reported after the verdict was read.
func TestThen(t *testing.T) {
	secret := rdma.NewSecret()
	lookup := func(string) (rdma.Secret, bool) { return secret, true }
	thenErr := errors.New("setup failed")
	for _, tt := range []struct {
		name  string
		early bool
		fail  bool
	}{{"full", false, false}, {"early", true, false}, {"full, then fails", false, true}, {"early, then fails", true, true}} {
		t.Run(tt.name, func(t *testing.T) {
			c, s := socketPair(t)
			after := make(chan []byte, 1)
			go func() {
				_, err := Server(s, "shm", lookup, func(string, bool) error { return nil }, nil)
				if err != nil {
					after <- nil
					return
				}
				msg, _ := s.ReadMsg(make([]byte, MaxMessageSize))
				after <- msg
			}()
			setup := Append(nil, &Message{Type: TypeResult, Code: CodeOK}) // any framed message
			err := Client(c, "shm", "c", &secret, ClientOptions{Early: tt.early, Then: func() error {
				if tt.fail {
					_ = c.WriteMsg(setup)
					return thenErr
				}
				return c.WriteMsg(setup)
			}})
			if tt.fail != errors.Is(err, thenErr) || (!tt.fail && err != nil) {
				t.Fatalf("client: %v", err)
			}
			if got := <-after; !bytes.Equal(got, setup) {
				t.Errorf("the server read %x after the handshake, want %x", got, setup)
			}
		})
	}
}

// TestServerMustProveFirst: a listener that does not know the secret is
// detected by the dialer before the dialer proves anything.
func TestImpostorListener(t *testing.T) {
	secret := rdma.NewSecret()
	c, s := pipePair(t)
	sent := make(chan [][]byte, 1)
	go func() {
		rec := &recorder{Conn: s}
		_, _ = Server(rec, "tcp", func(string) (rdma.Secret, bool) { return rdma.NewSecret(), true }, func(string, bool) error { return nil }, nil)
		_ = s.RW.(net.Conn).Close()
		sent <- rec.received
	}()
	if err := Client(c, "tcp", "x", &secret, ClientOptions{}); !errors.Is(err, rdma.ErrAuth) {
		t.Fatalf("client against an impostor: %v", err)
	}
	_ = c.RW.(net.Conn).Close()
	for _, msg := range <-sent {
		if m, err := Decode(msg); err == nil && m.Type == TypeResponse {
			t.Fatal("the dialer answered an impostor's challenge")
		}
	}
}

type recorder struct {
	Conn
	mu             sync.Mutex
	sent, received [][]byte
}

func (r *recorder) WriteMsg(msg []byte) error {
	r.mu.Lock()
	r.sent = append(r.sent, append([]byte(nil), msg...))
	r.mu.Unlock()
	return r.Conn.WriteMsg(msg)
}

func (r *recorder) ReadMsg(buf []byte) ([]byte, error) {
	msg, err := r.Conn.ReadMsg(buf)
	if err == nil {
		r.mu.Lock()
		r.received = append(r.received, append([]byte(nil), msg...))
		r.mu.Unlock()
	}
	return msg, err
}

// scripted replays fixed messages as the peer and records the answers.
type scripted struct {
	in  [][]byte
	out [][]byte
}

func (s *scripted) WriteMsg(msg []byte) error {
	s.out = append(s.out, append([]byte(nil), msg...))
	return nil
}

func (s *scripted) ReadMsg(buf []byte) ([]byte, error) {
	if len(s.in) == 0 {
		return nil, io.EOF
	}
	msg := s.in[0]
	s.in = s.in[1:]
	return buf[:copy(buf, msg)], nil // truncated like a seqpacket read
}

func TestReplayedClientIsRefused(t *testing.T) {
	secret := rdma.NewSecret()
	lookup := func(string) (rdma.Secret, bool) { return secret, true }
	c, s := pipePair(t)
	rec := &recorder{Conn: c}
	go func() {
		_, _ = Server(s, "shm", lookup, func(string, bool) error { return nil }, nil)
	}()
	if err := Client(rec, "shm", "replayed", &secret, ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	// Replay hello and response to a new server: its nonce differs.
	admitted := false
	replay := &scripted{in: rec.sent}
	_, err := Server(replay, "shm", lookup, func(string, bool) error { admitted = true; return nil }, nil)
	if !errors.Is(err, rdma.ErrAuth) || admitted {
		t.Fatalf("replayed handshake: %v, admitted %v", err, admitted)
	}
	last, derr := Decode(replay.out[len(replay.out)-1])
	if derr != nil || last.Type != TypeResult || last.Code != CodeAuth {
		t.Errorf("the server answered %+v %v", last, derr)
	}
	first, _ := Decode(replay.out[0])
	orig, _ := Decode(rec.received[0])
	if first.Nonce == orig.Nonce {
		t.Error("two challenges share a nonce")
	}
}

// TestImpostorAccept: in the early exchange, a listener that does not know
// the secret cannot make the dialer accept it.
func TestImpostorAccept(t *testing.T) {
	secret := rdma.NewSecret()
	var nonce [NonceSize]byte
	for name, accept := range map[string]Message{
		"zero proof":      {Type: TypeAccept},
		"full-mode proof": {Type: TypeAccept, Proof: proof(&secret, "server", "shm", "c", &nonce, &nonce)},
		"ok result":       {Type: TypeResult, Code: CodeOK},
		"challenge":       {Type: TypeChallenge, Proof: proof(&secret, "server", "shm", "c", &nonce, &nonce)},
	} {
		t.Run(name, func(t *testing.T) {
			conn := &scripted{in: [][]byte{Append(nil, &accept)}}
			err := Client(conn, "shm", "c", &secret, ClientOptions{Early: true, Rand: bytes.NewReader(make([]byte, NonceSize))})
			if !errors.Is(err, rdma.ErrAuth) && !errors.Is(err, rdma.ErrProtocol) {
				t.Fatalf("client accepted an impostor: %v", err)
			}
		})
	}
}

// TestReplayedEarlyHello: a recorded EarlyHello is refused once the
// connection was admitted, and an early proof is never taken for another
// provider or connection.
func TestReplayedEarlyHello(t *testing.T) {
	secret := rdma.NewSecret()
	lookup := func(string) (rdma.Secret, bool) { return secret, true }
	c, s := pipePair(t)
	rec := &recorder{Conn: c}
	admittedBefore := false
	admit := func(_ string, early bool) error {
		if early && admittedBefore {
			return ErrEarlyRefused
		}
		admittedBefore = true
		return nil
	}
	go func() { _, _ = Server(s, "shm", lookup, admit, nil) }()
	if err := Client(rec, "shm", "replayed", &secret, ClientOptions{Early: true}); err != nil {
		t.Fatal(err)
	}
	if len(rec.sent) != 1 {
		t.Fatalf("the early exchange sent %d messages", len(rec.sent))
	}
	replay := &scripted{in: rec.sent}
	if _, err := Server(replay, "shm", lookup, admit, nil); !errors.Is(err, ErrEarlyRefused) {
		t.Fatalf("replayed early hello: %v", err)
	}
	if last, err := Decode(replay.out[len(replay.out)-1]); err != nil || last.Type != TypeResult || last.Code != CodeEarlyRefused {
		t.Errorf("the server answered %+v %v", last, err)
	}
	replay = &scripted{in: rec.sent}
	if _, err := Server(replay, "tcp", lookup, func(string, bool) error { t.Error("admitted"); return nil }, nil); !errors.Is(err, rdma.ErrAuth) {
		t.Fatalf("early hello for another provider: %v", err)
	}
}

func TestProofsDiffer(t *testing.T) {
	s := rdma.NewSecret()
	var a, b [NonceSize]byte
	a[0], b[0] = 1, 2
	base := proof(&s, "server", "tcp", "c", &a, &b)
	for name, p := range map[string][ProofSize]byte{
		"role":     proof(&s, "client", "tcp", "c", &a, &b),
		"early":    proof(&s, "server-early", "tcp", "c", &a, &b),
		"provider": proof(&s, "server", "shm", "c", &a, &b),
		"conn":     proof(&s, "server", "tcp", "d", &a, &b),
		"nonces":   proof(&s, "server", "tcp", "c", &b, &a),
	} {
		if p == base {
			t.Errorf("changing the %s does not change the proof", name)
		}
	}
	// Length prefixes keep ("ab","c") and ("a","bc") apart.
	if proof(&s, "server", "ab", "c", &a, &b) == proof(&s, "server", "a", "bc", &a, &b) {
		t.Error("provider and connection ID run together")
	}
}

func TestDecodeRejects(t *testing.T) {
	var nonce [NonceSize]byte
	good := Append(nil, &Message{Type: TypeHello, ConnID: "abc", Nonce: nonce})
	early := Append(nil, &Message{Type: TypeEarlyHello, ConnID: "abc", Nonce: nonce})
	tests := map[string][]byte{
		"empty":           nil,
		"short header":    good[:3],
		"bad magic":       append([]byte{'X'}, good[1:]...),
		"bad version":     append(append([]byte{}, good[:2]...), append([]byte{9}, good[3:]...)...),
		"unknown type":    Append(nil, &Message{Type: 9}),
		"truncated body":  good[:len(good)-1],
		"trailing byte":   append(append([]byte{}, good...), 0),
		"empty conn ID":   Append(nil, &Message{Type: TypeHello, ConnID: "", Nonce: nonce}),
		"bad result code": {magic[0], magic[1], Version, byte(TypeResult), 0, 1, 99},
		"oversized":       {magic[0], magic[1], Version, byte(TypeHello), 0xff, 0xff},
		"short early":     early[:len(early)-1],
		"hello as early":  append(append([]byte{}, good[:3]...), append([]byte{byte(TypeEarlyHello)}, good[4:]...)...),
		"short accept":    Append(nil, &Message{Type: TypeAccept})[:HeaderSize+ProofSize-1],
	}
	for name, b := range tests {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	m, err := Decode(good)
	if err != nil || m.ConnID != "abc" {
		t.Fatalf("good hello: %+v %v", m, err)
	}
	if !bytes.Equal(Append(nil, m), good) {
		t.Error("re-encoding differs")
	}
}
