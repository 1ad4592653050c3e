package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tether-mesh/tether/internal/testca"
)

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
	ca := testca.New(t, "tether test CA")
	serverCert, serverKey := ca.Issue(t, "forwarder", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.Issue(t, "client", x509.ExtKeyUsageClientAuth)
	rogueCert, rogueKey := testca.New(t, "another CA").Issue(t, "rogue", x509.ExtKeyUsageClientAuth)
	env := []string{
		"TETHER_NAME=fwd", "TETHER_LISTEN_URL=tcp://127.0.0.1:0", "TETHER_METRICS_ADDR=127.0.0.1:0",
		"TETHER_TLS_CERT_FILE=" + writeFile(t, dir, "tls.crt", serverCert),
		"TETHER_TLS_KEY_FILE=" + writeFile(t, dir, "tls.key", serverKey),
		"TETHER_TLS_CA_FILE=" + writeFile(t, dir, "ca.crt", ca.PEM),
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
	roots.AppendCertsFromPEM(ca.PEM)
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
