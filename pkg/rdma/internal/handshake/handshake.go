// Package handshake authenticates the two ends of an rdma channel: each side
// proves that it knows the connection's secret with an HMAC-SHA256 over a
// transcript that includes a fresh nonce from the other side, so the secret
// never crosses the wire and a recorded handshake cannot be replayed.
//
// The exchange (the dialer is the client):
//
//	client → server  Hello     {connID, client nonce}
//	server → client  Challenge {server nonce, server proof}   or Result{refusal}
//	client → server  Response  {client proof}                 or Result{auth}
//	server → client  Result    {OK or refusal}
//
// server proof = HMAC(secret, "tether-rdma/1 server" | provider | connID | client nonce | server nonce)
// client proof = HMAC(secret, "tether-rdma/1 client" | provider | connID | client nonce | server nonce)
//
// Proofs are compared in constant time. The server looks the secret up by the
// connection ID in Hello, so one listener serves many connection IDs.
package handshake

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// Sizes of the handshake's fields and messages.
const (
	NonceSize = 32
	ProofSize = sha256.Size
	// HeaderSize is the size of a message header: magic (2), version (1),
	// type (1) and body length (2, big endian).
	HeaderSize = 6
	// MaxBodySize bounds a message body; the largest is a Hello.
	MaxBodySize = 1 + rdma.MaxConnIDSize + NonceSize
	// MaxMessageSize is the largest encoded message.
	MaxMessageSize = HeaderSize + MaxBodySize
	// Version is the protocol version this package speaks.
	Version = 1
)

var magic = [2]byte{'T', 'H'}

// Type is a handshake message type.
type Type uint8

// Message types.
const (
	TypeHello     Type = 1
	TypeChallenge Type = 2
	TypeResponse  Type = 3
	TypeResult    Type = 4
)

// Code is the outcome carried by a Result message.
type Code uint8

// Result codes.
const (
	CodeOK              Code = 0
	CodeUnknown         Code = 1
	CodeAuth            Code = 2
	CodeAlreadyAttached Code = 3
	CodeRejected        Code = 4
)

// Message is a decoded handshake message; the fields used depend on Type.
type Message struct {
	Type   Type
	ConnID string
	Nonce  [NonceSize]byte
	Proof  [ProofSize]byte
	Code   Code
}

var errMalformed = errors.New("malformed handshake message")

// Append encodes m after dst.
func Append(dst []byte, m *Message) []byte {
	var body int
	switch m.Type {
	case TypeHello:
		body = 1 + len(m.ConnID) + NonceSize
	case TypeChallenge:
		body = NonceSize + ProofSize
	case TypeResponse:
		body = ProofSize
	case TypeResult:
		body = 1
	}
	dst = append(dst, magic[0], magic[1], Version, byte(m.Type))
	dst = binary.BigEndian.AppendUint16(dst, uint16(body))
	switch m.Type {
	case TypeHello:
		dst = append(dst, byte(len(m.ConnID)))
		dst = append(dst, m.ConnID...)
		dst = append(dst, m.Nonce[:]...)
	case TypeChallenge:
		dst = append(dst, m.Nonce[:]...)
		dst = append(dst, m.Proof[:]...)
	case TypeResponse:
		dst = append(dst, m.Proof[:]...)
	case TypeResult:
		dst = append(dst, byte(m.Code))
	}
	return dst
}

// ParseHeader validates a message header and returns the type and body length.
func ParseHeader(h []byte) (Type, int, error) {
	if len(h) < HeaderSize {
		return 0, 0, fmt.Errorf("%w: short header", errMalformed)
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return 0, 0, fmt.Errorf("%w: bad magic", errMalformed)
	}
	if h[2] != Version {
		return 0, 0, fmt.Errorf("%w: unsupported version %d", errMalformed, h[2])
	}
	n := int(binary.BigEndian.Uint16(h[4:6]))
	if n > MaxBodySize {
		return 0, 0, fmt.Errorf("%w: body of %d bytes", errMalformed, n)
	}
	return Type(h[3]), n, nil
}

// Decode parses exactly one encoded message. It never panics and never
// allocates more than the connection ID string.
func Decode(b []byte) (*Message, error) {
	t, n, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	body := b[HeaderSize:]
	if len(body) != n {
		return nil, fmt.Errorf("%w: body is %d bytes, header says %d", errMalformed, len(body), n)
	}
	m := &Message{Type: t}
	switch t {
	case TypeHello:
		if n < 1 {
			return nil, fmt.Errorf("%w: empty hello", errMalformed)
		}
		idLen := int(body[0])
		if idLen == 0 || n != 1+idLen+NonceSize {
			return nil, fmt.Errorf("%w: hello with connection ID of %d bytes in %d", errMalformed, idLen, n)
		}
		m.ConnID = string(body[1 : 1+idLen])
		copy(m.Nonce[:], body[1+idLen:])
	case TypeChallenge:
		if n != NonceSize+ProofSize {
			return nil, fmt.Errorf("%w: challenge of %d bytes", errMalformed, n)
		}
		copy(m.Nonce[:], body)
		copy(m.Proof[:], body[NonceSize:])
	case TypeResponse:
		if n != ProofSize {
			return nil, fmt.Errorf("%w: response of %d bytes", errMalformed, n)
		}
		copy(m.Proof[:], body)
	case TypeResult:
		if n != 1 {
			return nil, fmt.Errorf("%w: result of %d bytes", errMalformed, n)
		}
		m.Code = Code(body[0])
		if m.Code > CodeRejected {
			return nil, fmt.Errorf("%w: result code %d", errMalformed, m.Code)
		}
	default:
		return nil, fmt.Errorf("%w: type %d", errMalformed, t)
	}
	return m, nil
}

// Conn carries handshake messages: one encoded message per WriteMsg, one
// per ReadMsg.
type Conn interface {
	// WriteMsg sends one encoded message.
	WriteMsg(msg []byte) error
	// ReadMsg reads one encoded message into buf (at least MaxMessageSize
	// long) and returns it.
	ReadMsg(buf []byte) ([]byte, error)
}

// StreamConn frames handshake messages on a byte stream (tcp): a message's
// header says how long its body is.
type StreamConn struct {
	RW io.ReadWriter
}

// WriteMsg writes msg.
func (c StreamConn) WriteMsg(msg []byte) error {
	_, err := c.RW.Write(msg)
	return err
}

// ReadMsg reads one message: a header, validated before the body is read.
func (c StreamConn) ReadMsg(buf []byte) ([]byte, error) {
	if _, err := io.ReadFull(c.RW, buf[:HeaderSize]); err != nil {
		return nil, err
	}
	_, n, err := ParseHeader(buf[:HeaderSize])
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c.RW, buf[HeaderSize:HeaderSize+n]); err != nil {
		return nil, err
	}
	return buf[:HeaderSize+n], nil
}

func proof(secret *rdma.Secret, role, provider, connID string, clientNonce, serverNonce *[NonceSize]byte) [ProofSize]byte {
	mac := hmac.New(sha256.New, secret[:])
	var lenBuf [2]byte
	for _, s := range []string{"tether-rdma/1 " + role, provider, connID} {
		binary.BigEndian.PutUint16(lenBuf[:], uint16(len(s)))
		mac.Write(lenBuf[:])
		mac.Write([]byte(s))
	}
	mac.Write(clientNonce[:])
	mac.Write(serverNonce[:])
	var out [ProofSize]byte
	mac.Sum(out[:0])
	return out
}

func codeError(c Code) error {
	switch c {
	case CodeUnknown:
		return rdma.ErrUnknownConnection
	case CodeAuth:
		return rdma.ErrAuth
	case CodeAlreadyAttached:
		return rdma.ErrAlreadyAttached
	default:
		return rdma.ErrRejected
	}
}

func errorCode(err error) Code {
	switch {
	case errors.Is(err, rdma.ErrUnknownConnection):
		return CodeUnknown
	case errors.Is(err, rdma.ErrAuth):
		return CodeAuth
	case errors.Is(err, rdma.ErrAlreadyAttached):
		return CodeAlreadyAttached
	default:
		return CodeRejected
	}
}

func protocolError(err error) error {
	if errors.Is(err, errMalformed) {
		return fmt.Errorf("%w: %w", rdma.ErrProtocol, err)
	}
	return err
}

func readExpect(conn Conn, buf []byte, want Type) (*Message, error) {
	raw, err := conn.ReadMsg(buf)
	if err != nil {
		return nil, protocolError(err)
	}
	m, err := Decode(raw)
	if err != nil {
		return nil, protocolError(err)
	}
	if m.Type == TypeResult {
		if m.Code == CodeOK {
			return nil, fmt.Errorf("%w: unexpected OK result waiting for message type %d", rdma.ErrProtocol, want)
		}
		return nil, codeError(m.Code)
	}
	if m.Type != want {
		return nil, fmt.Errorf("%w: handshake message type %d, want %d", rdma.ErrProtocol, m.Type, want)
	}
	return m, nil
}

// Client runs the dialer's side of the handshake on conn. It returns nil
// once the server accepted the channel, or an error wrapping ErrAuth (the
// server could not prove the secret, or refused ours), ErrUnknownConnection,
// ErrAlreadyAttached, ErrRejected or ErrProtocol. rnd supplies nonces
// (crypto/rand when nil).
func Client(conn Conn, provider, connID string, secret *rdma.Secret, rnd io.Reader) error {
	if rnd == nil {
		rnd = rand.Reader
	}
	hello := Message{Type: TypeHello, ConnID: connID}
	if _, err := io.ReadFull(rnd, hello.Nonce[:]); err != nil {
		return fmt.Errorf("handshake nonce: %w", err)
	}
	buf := make([]byte, MaxMessageSize)
	if err := conn.WriteMsg(Append(buf[:0], &hello)); err != nil {
		return err
	}
	ch, err := readExpect(conn, buf, TypeChallenge)
	if err != nil {
		return err
	}
	want := proof(secret, "server", provider, connID, &hello.Nonce, &ch.Nonce)
	if !hmac.Equal(want[:], ch.Proof[:]) {
		// Tell the server why we leave; its answer does not matter.
		_ = conn.WriteMsg(Append(buf[:0], &Message{Type: TypeResult, Code: CodeAuth}))
		return fmt.Errorf("%w: the listener could not prove the connection's secret", rdma.ErrAuth)
	}
	resp := Message{Type: TypeResponse, Proof: proof(secret, "client", provider, connID, &hello.Nonce, &ch.Nonce)}
	if err := conn.WriteMsg(Append(buf[:0], &resp)); err != nil {
		return err
	}
	raw, err := conn.ReadMsg(buf)
	if err != nil {
		return protocolError(err)
	}
	res, err := Decode(raw)
	if err != nil {
		return protocolError(err)
	}
	if res.Type != TypeResult {
		return fmt.Errorf("%w: handshake message type %d, want a result", rdma.ErrProtocol, res.Type)
	}
	if res.Code != CodeOK {
		return codeError(res.Code)
	}
	return nil
}

// Server runs the listener's side of the handshake on conn. lookup returns
// the secret expected for a connection ID; admit is called once the client
// proved the secret and may refuse the channel (for example with
// ErrAlreadyAttached); when admit returns nil the server answers OK. Server
// returns the authenticated connection ID, or an error wrapping
// ErrUnknownConnection, ErrAuth, ErrProtocol or admit's error; the client
// has been told the outcome whenever the connection still worked.
func Server(conn Conn, provider string, lookup func(connID string) (rdma.Secret, bool), admit func(connID string) error, rnd io.Reader) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	buf := make([]byte, MaxMessageSize)
	hello, err := readExpect(conn, buf, TypeHello)
	if err != nil {
		return "", err
	}
	refuse := func(err error) (string, error) {
		_ = conn.WriteMsg(Append(buf[:0], &Message{Type: TypeResult, Code: errorCode(err)}))
		return hello.ConnID, err
	}
	secret, ok := lookup(hello.ConnID)
	if !ok {
		return refuse(fmt.Errorf("%w: %q", rdma.ErrUnknownConnection, hello.ConnID))
	}
	ch := Message{Type: TypeChallenge}
	if _, err := io.ReadFull(rnd, ch.Nonce[:]); err != nil {
		return hello.ConnID, fmt.Errorf("handshake nonce: %w", err)
	}
	ch.Proof = proof(&secret, "server", provider, hello.ConnID, &hello.Nonce, &ch.Nonce)
	if err := conn.WriteMsg(Append(buf[:0], &ch)); err != nil {
		return hello.ConnID, err
	}
	resp, err := readExpect(conn, buf, TypeResponse)
	if err != nil {
		return hello.ConnID, err
	}
	want := proof(&secret, "client", provider, hello.ConnID, &hello.Nonce, &ch.Nonce)
	if !hmac.Equal(want[:], resp.Proof[:]) {
		return refuse(fmt.Errorf("%w: the dialer of %q could not prove the connection's secret", rdma.ErrAuth, hello.ConnID))
	}
	if err := admit(hello.ConnID); err != nil {
		return refuse(err)
	}
	if err := conn.WriteMsg(Append(buf[:0], &Message{Type: TypeResult, Code: CodeOK})); err != nil {
		return hello.ConnID, err
	}
	return hello.ConnID, nil
}
