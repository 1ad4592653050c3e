package rdma_test

import (
	"testing"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// FuzzParseSecret: a secret arrives as text in connection parameters from
// the remote member; parsing any text must not panic, and whatever parses
// must encode back to the same secret.
func FuzzParseSecret(f *testing.F) {
	f.Add(rdma.NewSecret().Encode())
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := rdma.ParseSecret(text)
		if err != nil {
			return
		}
		again, err := rdma.ParseSecret(s.Encode())
		if err != nil || again != s {
			t.Fatalf("%q parsed, but its encoding does not parse back", text)
		}
	})
}
