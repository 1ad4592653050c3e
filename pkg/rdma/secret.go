package rdma

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
)

// SecretSize is the size of a connection secret in bytes.
const SecretSize = 32

// Secret is the per-connection key that both ends of a channel must know.
// The handshake proves knowledge of it without sending it. Its String,
// GoString, Format and JSON/text marshalling all print a redaction, so a
// Secret that reaches a log or an error message does not leak; use Encode
// and ParseSecret to carry it in connection parameters.
type Secret [SecretSize]byte

const redactedSecret = "[redacted secret]"

// NewSecret returns a fresh random secret from crypto/rand.
func NewSecret() Secret {
	var s Secret
	_, _ = rand.Read(s[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return s
}

// ParseSecret decodes a secret produced by Secret.Encode.
func ParseSecret(text string) (Secret, error) {
	var s Secret
	if len(text) != base64.RawURLEncoding.EncodedLen(SecretSize) {
		return Secret{}, fmt.Errorf("%w: secret is not %d bytes of unpadded base64url", ErrInvalidArgument, SecretSize)
	}
	n, err := base64.RawURLEncoding.Decode(s[:], []byte(text))
	if err != nil || n != SecretSize {
		return Secret{}, fmt.Errorf("%w: secret is not %d bytes of unpadded base64url", ErrInvalidArgument, SecretSize)
	}
	return s, nil
}

// Encode returns the secret as unpadded base64url text, suitable for a
// connection parameter. Treat the result as the secret itself.
func (s Secret) Encode() string {
	return base64.RawURLEncoding.EncodeToString(s[:])
}

// IsZero reports whether s is the zero value (never a valid secret).
func (s Secret) IsZero() bool {
	return s == Secret{}
}

// String returns a redaction, never the secret.
func (Secret) String() string { return redactedSecret }

// GoString returns a redaction, never the secret.
func (Secret) GoString() string { return "rdma.Secret{" + redactedSecret + "}" }

// Format prints a redaction for every verb, so %x or %v cannot leak the secret.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redactedSecret) }

// MarshalText returns a redaction, never the secret.
func (Secret) MarshalText() ([]byte, error) { return []byte(redactedSecret), nil }

// MarshalJSON returns a redaction, never the secret.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redactedSecret + `"`), nil }
