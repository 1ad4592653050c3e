package handshake

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

func seeds(f *testing.F) {
	var nonce [NonceSize]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	for _, m := range []Message{
		{Type: TypeHello, ConnID: "conn-1", Nonce: nonce},
		{Type: TypeChallenge, Nonce: nonce, Proof: [ProofSize]byte{1}},
		{Type: TypeResponse, Proof: [ProofSize]byte{2}},
		{Type: TypeResult, Code: CodeOK},
		{Type: TypeResult, Code: CodeAuth},
		{Type: TypeEarlyHello, ConnID: "conn-1", Nonce: nonce, Proof: [ProofSize]byte{3}},
		{Type: TypeAccept, Proof: [ProofSize]byte{4}},
		{Type: TypeResult, Code: CodeEarlyRefused},
	} {
		f.Add(Append(nil, &m), []byte(nil))
	}
	f.Add([]byte("TH\x01\x01\x00\x00"), []byte("TH\x01\x03\x00\x20"))
}

// FuzzDecode: any bytes decode without panicking, and what decodes
// re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, msg, _ []byte) {
		m, err := Decode(msg)
		if err != nil {
			return
		}
		if got := Append(nil, m); !bytes.Equal(got, msg) {
			t.Fatalf("decode/encode differs:\n%x\n%x", msg, got)
		}
	})
}

// FuzzServer: a dialer sending anything as its hello and response never
// crashes the listener and is never admitted without the secret.
func FuzzServer(f *testing.F) {
	seeds(f)
	secret := rdma.Secret{1, 2, 3}
	f.Fuzz(func(t *testing.T, hello, response []byte) {
		conn := &scripted{in: [][]byte{hello, response}}
		admitted := false
		_, err := Server(conn, "tcp", func(string) (rdma.Secret, bool) { return secret, true }, func(string, bool) error { admitted = true; return nil }, nil)
		if err == nil || admitted {
			t.Fatalf("a fuzzed dialer was admitted (err %v)", err)
		}
		for _, out := range conn.out {
			if bytes.Contains(out, secret[:]) {
				t.Fatal("the secret went on the wire")
			}
		}
	})
}

// FuzzClient: a listener sending anything never crashes the dialer and
// never makes it accept without proving the secret, in either exchange.
func FuzzClient(f *testing.F) {
	seeds(f)
	secret := rdma.Secret{4, 5, 6}
	f.Fuzz(func(t *testing.T, challenge, result []byte) {
		for _, early := range []bool{false, true} {
			conn := &scripted{in: [][]byte{challenge, result}}
			err := Client(conn, "shm", "conn", &secret, ClientOptions{Early: early})
			if err == nil {
				t.Fatalf("a fuzzed listener was accepted (early %v)", early)
			}
			if !errors.Is(err, rdma.ErrProtocol) && !errors.Is(err, rdma.ErrAuth) && !errors.Is(err, rdma.ErrUnknownConnection) &&
				!errors.Is(err, rdma.ErrAlreadyAttached) && !errors.Is(err, rdma.ErrRejected) && !errors.Is(err, ErrEarlyRefused) && err.Error() != "EOF" {
				t.Fatalf("unclassified error %v", err)
			}
		}
	})
}

// FuzzStreamConn: the stream framing reads any bytes without panicking or
// reading a body longer than the limit.
func FuzzStreamConn(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		c := StreamConn{RW: &rw{r: bytes.NewReader(append(a, b...))}}
		buf := make([]byte, MaxMessageSize)
		for range 4 {
			msg, err := c.ReadMsg(buf)
			if err != nil {
				return
			}
			if len(msg) > MaxMessageSize {
				t.Fatalf("message of %d bytes", len(msg))
			}
		}
	})
}

type rw struct{ r *bytes.Reader }

func (r *rw) Read(p []byte) (int, error)  { return r.r.Read(p) }
func (r *rw) Write(p []byte) (int, error) { return len(p), nil }
