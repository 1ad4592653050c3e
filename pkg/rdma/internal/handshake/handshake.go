// Package handshake authenticates the two ends of an rdma channel: each side
// proves that it knows the connection's secret with an HMAC-SHA256 over a
// transcript that includes a fresh nonce from the other side, so the secret
// never crosses the wire and a recorded handshake cannot be replayed.
//
// The full exchange (the dialer is the client) takes two round trips:
//
//	client → server  Hello     {connID, client nonce}
//	server → client  Challenge {server nonce, server proof}   or Result{refusal}
//	client → server  Response  {client proof}                 or Result{auth}
//	server → client  Result    {OK or refusal}
//
//	server proof = HMAC(secret, "tether-rdma/1 server" | provider | connID | client nonce | server nonce)
//	client proof = HMAC(secret, "tether-rdma/1 client" | provider | connID | client nonce | server nonce)
//
// The early exchange takes one, for the first channel of a connection:
//
//	client → server  EarlyHello {connID, client nonce, early client proof}
//	server → client  Accept     {early server proof}              or Result{refusal}
//
//	early client proof = HMAC(secret, "tether-rdma/1 client-early" | provider | connID | client nonce | zeros)
//	early server proof = HMAC(secret, "tether-rdma/1 server-early" | provider | connID | client nonce | zeros)
//
// Without a server nonce, the server takes an early proof only while no
// channel was ever admitted for the connection ID (admit is told, and
// refuses with ErrEarlyRefused afterwards): a secret is minted for each
// connection, so a recorded EarlyHello is worthless once the connection's
// first channel attached, and the dialer of a later channel (after a break)
// falls back to the full exchange. The server's proof still covers the
// client's fresh nonce, so the dialer knows the listener is live.
//
// In both exchanges the dialer may send what follows the handshake (a
// provider's setup) right after its last handshake message, before the
// server's verdict (ClientOptions.Then): the server reads it only after it
// admitted the dialer, and the dialer uses the channel only after it
// verified the server's proof.
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
	// MaxBodySize bounds a message body; the largest is an EarlyHello.
	MaxBodySize = 1 + rdma.MaxConnIDSize + NonceSize + ProofSize
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
	// TypeEarlyHello opens the early exchange: a Hello with the dialer's proof.
	TypeEarlyHello Type = 5
	// TypeAccept admits an EarlyHello, with the listener's proof.
	TypeAccept Type = 6
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
	// CodeEarlyRefused refuses an EarlyHello for a connection that had a
	// channel before: dial again with the full exchange.
	CodeEarlyRefused Code = 5
)

// ErrEarlyRefused is the refusal of an early exchange for a connection ID
// that had a channel before (see the package documentation). A dialer that
// gets it dials again with the full exchange; admit returns it to refuse.
var ErrEarlyRefused = errors.New("early attach refused: the connection had a channel before")

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
	case TypeEarlyHello:
		body = 1 + len(m.ConnID) + NonceSize + ProofSize
	case TypeChallenge:
		body = NonceSize + ProofSize
	case TypeResponse, TypeAccept:
		body = ProofSize
	case TypeResult:
		body = 1
	}
	dst = append(dst, magic[0], magic[1], Version, byte(m.Type))
	dst = binary.BigEndian.AppendUint16(dst, uint16(body))
	switch m.Type {
	case TypeHello, TypeEarlyHello:
		dst = append(dst, byte(len(m.ConnID)))
		dst = append(dst, m.ConnID...)
		dst = append(dst, m.Nonce[:]...)
		if m.Type == TypeEarlyHello {
			dst = append(dst, m.Proof[:]...)
		}
	case TypeChallenge:
		dst = append(dst, m.Nonce[:]...)
		dst = append(dst, m.Proof[:]...)
	case TypeResponse, TypeAccept:
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
	case TypeHello, TypeEarlyHello:
		if n < 1 {
			return nil, fmt.Errorf("%w: empty hello", errMalformed)
		}
		idLen := int(body[0])
		want := 1 + idLen + NonceSize
		if t == TypeEarlyHello {
			want += ProofSize
		}
		if idLen == 0 || n != want {
			return nil, fmt.Errorf("%w: hello with connection ID of %d bytes in %d", errMalformed, idLen, n)
		}
		m.ConnID = string(body[1 : 1+idLen])
		copy(m.Nonce[:], body[1+idLen:])
		if t == TypeEarlyHello {
			copy(m.Proof[:], body[1+idLen+NonceSize:])
		}
	case TypeChallenge:
		if n != NonceSize+ProofSize {
			return nil, fmt.Errorf("%w: challenge of %d bytes", errMalformed, n)
		}
		copy(m.Nonce[:], body)
		copy(m.Proof[:], body[NonceSize:])
	case TypeResponse, TypeAccept:
		if n != ProofSize {
			return nil, fmt.Errorf("%w: message type %d of %d bytes", errMalformed, t, n)
		}
		copy(m.Proof[:], body)
	case TypeResult:
		if n != 1 {
			return nil, fmt.Errorf("%w: result of %d bytes", errMalformed, n)
		}
		m.Code = Code(body[0])
		if m.Code > CodeEarlyRefused {
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
	case CodeEarlyRefused:
		return ErrEarlyRefused
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
	case errors.Is(err, ErrEarlyRefused):
		return CodeEarlyRefused
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

// ClientOptions configure Client.
type ClientOptions struct {
	// Early runs the early exchange (one round trip), which a listener
	// takes only for a connection's first channel; it refuses the others
	// with ErrEarlyRefused.
	Early bool
	// Then, if set, runs once the dialer's last handshake message is
	// written, before the server's verdict is read: a provider sends its
	// setup there, so that it travels with the handshake. The listener
	// reads it only after it admitted the dialer; the dialer must not trust
	// anything of the listener's before Client returned nil.
	Then func() error
	// Rand supplies nonces (crypto/rand when nil).
	Rand io.Reader
}

// Client runs the dialer's side of the handshake on conn. It returns nil
// once the server proved the secret and accepted the channel, or an error
// wrapping ErrAuth (the server could not prove the secret, or refused
// ours), ErrUnknownConnection, ErrAlreadyAttached, ErrRejected,
// ErrEarlyRefused or ErrProtocol, or the error of o.Then.
func Client(conn Conn, provider, connID string, secret *rdma.Secret, o ClientOptions) error {
	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	hello := Message{Type: TypeHello, ConnID: connID}
	if _, err := io.ReadFull(rnd, hello.Nonce[:]); err != nil {
		return fmt.Errorf("handshake nonce: %w", err)
	}
	var zero [NonceSize]byte
	if o.Early {
		hello.Type = TypeEarlyHello
		hello.Proof = proof(secret, "client-early", provider, connID, &hello.Nonce, &zero)
	}
	buf := make([]byte, MaxMessageSize)
	if err := conn.WriteMsg(Append(buf[:0], &hello)); err != nil {
		return err
	}
	if o.Early {
		thenErr := then(o.Then)
		acc, err := readExpect(conn, buf, TypeAccept)
		if err != nil {
			return err // a refusal explains a failed Then better than Then's error
		}
		want := proof(secret, "server-early", provider, connID, &hello.Nonce, &zero)
		if !hmac.Equal(want[:], acc.Proof[:]) {
			return fmt.Errorf("%w: the listener could not prove the connection's secret", rdma.ErrAuth)
		}
		return thenErr
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
	thenErr := then(o.Then)
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
	return thenErr
}

func then(f func() error) error {
	if f == nil {
		return nil
	}
	return f()
}

// Server runs the listener's side of the handshake on conn, in whichever
// exchange the dialer opened. lookup returns the secret expected for a
// connection ID; admit is called once the client proved the secret, with
// early set for the early exchange, and may refuse the channel (for example
// with ErrAlreadyAttached, or ErrEarlyRefused for a connection that had a
// channel before); when admit returns nil the server accepts. Server
// returns the authenticated connection ID, or an error wrapping
// ErrUnknownConnection, ErrAuth, ErrProtocol or admit's error; the client
// has been told the outcome whenever the connection still worked.
func Server(conn Conn, provider string, lookup func(connID string) (rdma.Secret, bool), admit func(connID string, early bool) error, rnd io.Reader) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	buf := make([]byte, MaxMessageSize)
	raw, err := conn.ReadMsg(buf)
	if err != nil {
		return "", protocolError(err)
	}
	hello, err := Decode(raw)
	if err != nil {
		return "", protocolError(err)
	}
	if hello.Type != TypeHello && hello.Type != TypeEarlyHello {
		return "", fmt.Errorf("%w: handshake message type %d, want a hello", rdma.ErrProtocol, hello.Type)
	}
	refuse := func(err error) (string, error) {
		_ = conn.WriteMsg(Append(buf[:0], &Message{Type: TypeResult, Code: errorCode(err)}))
		return hello.ConnID, err
	}
	secret, ok := lookup(hello.ConnID)
	if !ok {
		return refuse(fmt.Errorf("%w: %q", rdma.ErrUnknownConnection, hello.ConnID))
	}
	if hello.Type == TypeEarlyHello {
		var zero [NonceSize]byte
		want := proof(&secret, "client-early", provider, hello.ConnID, &hello.Nonce, &zero)
		if !hmac.Equal(want[:], hello.Proof[:]) {
			return refuse(fmt.Errorf("%w: the dialer of %q could not prove the connection's secret", rdma.ErrAuth, hello.ConnID))
		}
		if err := admit(hello.ConnID, true); err != nil {
			return refuse(err)
		}
		acc := Message{Type: TypeAccept, Proof: proof(&secret, "server-early", provider, hello.ConnID, &hello.Nonce, &zero)}
		if err := conn.WriteMsg(Append(buf[:0], &acc)); err != nil {
			return hello.ConnID, err
		}
		return hello.ConnID, nil
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
	if err := admit(hello.ConnID, false); err != nil {
		return refuse(err)
	}
	if err := conn.WriteMsg(Append(buf[:0], &Message{Type: TypeResult, Code: CodeOK})); err != nil {
		return hello.ConnID, err
	}
	return hello.ConnID, nil
}
