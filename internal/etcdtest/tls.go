package etcdtest

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/tether-mesh/tether/internal/testca"
)

// TLSFiles are PEM files for an etcd with client TLS, in a test's
// temporary directory: a CA, a certificate for the server on 127.0.0.1,
// and a client certificate, both signed by the CA; OtherCA is a CA that
// signed neither.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey, OtherCA string
}

// NewTLSFiles writes the files of TLSFiles.
func NewTLSFiles(tb testing.TB) TLSFiles {
	tb.Helper()
	dir := tb.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	ca := testca.New(tb, "etcd test CA")
	serverCert, serverKey := ca.Issue(tb, "etcd", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.Issue(tb, "tether", x509.ExtKeyUsageClientAuth)
	return TLSFiles{
		CA:         write("ca.pem", ca.PEM),
		ServerCert: write("server.pem", serverCert),
		ServerKey:  write("server-key.pem", serverKey),
		ClientCert: write("client.pem", clientCert),
		ClientKey:  write("client-key.pem", clientKey),
		OtherCA:    write("other-ca.pem", testca.New(tb, "etcd test CA").PEM),
	}
}

// Start starts a server that takes clients over TLS only, with the
// files' server certificate, and requires client certificates the files'
// CA signed.
func (f TLSFiles) Start(tb testing.TB) *Server {
	tb.Helper()
	return Start(tb, WithClientTLS(f.ServerCert, f.ServerKey, f.CA))
}
