package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	write := func(name string, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		return key
	}
	serial := int64(0)
	create := func(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) []byte {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
		if err != nil {
			tb.Fatal(err)
		}
		return der
	}
	ca := func() (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key := newKey()
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "etcd test CA"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der := create(tmpl, nil, key, key)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			tb.Fatal(err)
		}
		return cert, key, der
	}
	caCert, caKey, caDER := ca()
	_, _, otherDER := ca()
	leaf := func(name string, usage x509.ExtKeyUsage) (certDER, keyDER []byte) {
		key := newKey()
		tmpl := &x509.Certificate{
			Subject: pkix.Name{CommonName: name}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		certDER = create(tmpl, caCert, key, caKey)
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		return certDER, keyDER
	}
	serverCert, serverKey := leaf("etcd", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := leaf("tether", x509.ExtKeyUsageClientAuth)
	return TLSFiles{
		CA:         write("ca.pem", "CERTIFICATE", caDER),
		ServerCert: write("server.pem", "CERTIFICATE", serverCert),
		ServerKey:  write("server-key.pem", "EC PRIVATE KEY", serverKey),
		ClientCert: write("client.pem", "CERTIFICATE", clientCert),
		ClientKey:  write("client-key.pem", "EC PRIVATE KEY", clientKey),
		OtherCA:    write("other-ca.pem", "CERTIFICATE", otherDER),
	}
}

// Start starts a server that takes clients over TLS only, with the
// files' server certificate, and requires client certificates the files'
// CA signed.
func (f TLSFiles) Start(tb testing.TB) *Server {
	tb.Helper()
	return Start(tb, WithClientTLS(f.ServerCert, f.ServerKey, f.CA))
}
