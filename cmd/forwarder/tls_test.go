package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// authority is a test CA.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newAuthority(t *testing.T, name string) *authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key (PEM) signed by the authority, for
// the extended key usages given (x509.ExtKeyUsageServerAuth,
// x509.ExtKeyUsageClientAuth or both).
func (a *authority) issue(t *testing.T, name string, usages ...x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMutualTLS: with the TLS files set, the gRPC listener serves only
// clients whose certificate the CA signed.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	ca := newAuthority(t, "tether test CA")
	serverCert, serverKey := ca.issue(t, "forwarder", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.issue(t, "client", x509.ExtKeyUsageClientAuth)
	rogueCert, rogueKey := newAuthority(t, "another CA").issue(t, "rogue", x509.ExtKeyUsageClientAuth)
	env := []string{
		"TETHER_NAME=fwd", "TETHER_LISTEN_URL=tcp://127.0.0.1:0", "TETHER_METRICS_ADDR=127.0.0.1:0",
		"TETHER_TLS_CERT_FILE=" + writeFile(t, dir, "tls.crt", serverCert),
		"TETHER_TLS_KEY_FILE=" + writeFile(t, dir, "tls.key", serverKey),
		"TETHER_TLS_CA_FILE=" + writeFile(t, dir, "ca.crt", ca.pem),
	}

	t.Run("unusable CA file", func(t *testing.T) {
		bad := slices.Concat(env, []string{"TETHER_TLS_CA_FILE=" + writeFile(t, dir, "garbage.crt", []byte("not a certificate"))})
		p := spawn(t, bad)
		if code := p.wait(t); code == 0 {
			t.Fatal("exit 0 with a CA file without a certificate")
		}
		if out := p.stderr.text(); !strings.HasPrefix(out, "tether-forwarder: TETHER_TLS_CA_FILE: ") || strings.Contains(out, "\n") {
			t.Fatalf("stderr: %s", out)
		}
	})

	p := spawn(t, env)
	_, line := p.stdout.waitFor(t, 0, `^listening tcp://`)
	url := strings.TrimPrefix(line, "listening ")
	p.stdout.waitFor(t, 0, `^ready$`)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	creds := func(certPEM, keyPEM []byte) grpc.DialOption {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
	}
	check := func(opt grpc.DialOption) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := healthpb.NewHealthClient(dial(t, url, opt)).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(creds(clientCert, clientKey)); err != nil {
		t.Fatalf("a client with a certificate of the CA: %v", err)
	}
	for name, opt := range map[string]grpc.DialOption{
		"no certificate":           creds(nil, nil),
		"another CA's certificate": creds(rogueCert, rogueKey),
		"no TLS":                   grpc.EmptyDialOption{},
		"the server's own key":     creds(serverCert, serverKey),
	} {
		if err := check(opt); err == nil {
			t.Errorf("%s: served", name)
		}
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr.text())
	}
}
