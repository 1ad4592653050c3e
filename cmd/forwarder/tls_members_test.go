package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/internal/testca"
	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
)

// TestMutualTLSToMembers: with TETHER_TLS_MEMBERS=true the forwarder dials
// members with mTLS, so that an echo member whose gRPC listener requires
// client certificates, joined through the forwarder over mTLS, serves a
// client of the forwarder; without it on either side, nothing works.
func TestMutualTLSToMembers(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	ca := testca.New(t, "tether test CA")
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	fwdCert, fwdKey := ca.Issue(t, "forwarder", both...)
	memberCert, memberKey := ca.Issue(t, "echo-1", both...)
	serverOnlyCert, serverOnlyKey := ca.Issue(t, "forwarder", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.Issue(t, "client", x509.ExtKeyUsageClientAuth)
	caFile := writeFile(t, dir, "ca.crt", ca.PEM)
	base := []string{"TETHER_NAME=fwd", "TETHER_LISTEN_URL=tcp://127.0.0.1:0", "TETHER_METRICS_ADDR=127.0.0.1:0", "TETHER_DIAL_TIMEOUT=500ms"}
	fwdTLS := []string{
		"TETHER_TLS_CERT_FILE=" + writeFile(t, dir, "fwd.crt", fwdCert),
		"TETHER_TLS_KEY_FILE=" + writeFile(t, dir, "fwd.key", fwdKey),
		"TETHER_TLS_CA_FILE=" + caFile,
	}
	memberTLS := []string{
		"-tls-cert-file", writeFile(t, dir, "member.crt", memberCert),
		"-tls-key-file", writeFile(t, dir, "member.key", memberKey),
		"-tls-ca-file", caFile,
	}

	t.Run("refused settings", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name   string
			env    []string
			args   []string
			code   int
			prefix string
		}{
			{"without the TLS files", []string{"TETHER_TLS_MEMBERS=true"}, nil, exitConfig, "tether-forwarder: TETHER_TLS_MEMBERS: true: "},
			{"the flag without the TLS files", nil, []string{"--tls-members"}, exitConfig, "tether-forwarder: TETHER_TLS_MEMBERS: true: "},
			{"with a certificate for servers only", []string{
				"TETHER_TLS_CERT_FILE=" + writeFile(t, dir, "server-only.crt", serverOnlyCert),
				"TETHER_TLS_KEY_FILE=" + writeFile(t, dir, "server-only.key", serverOnlyKey),
				"TETHER_TLS_CA_FILE=" + caFile, "TETHER_TLS_MEMBERS=true",
			}, nil, exitFailed, "tether-forwarder: TETHER_TLS_CERT_FILE: "},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				p := spawn(t, slices.Concat(base, tc.env), tc.args...)
				if code := p.wait(t); code != tc.code {
					t.Errorf("exit status %d, want %d", code, tc.code)
				}
				if out := p.stderr.text(); !strings.HasPrefix(out, tc.prefix) || strings.Contains(out, "\n") {
					t.Errorf("stderr %q, want one line starting with %q", out, tc.prefix)
				}
			})
		}
	})

	// The forwarder's listener always requires mTLS here; what changes is
	// whether it dials members with it, and whether the member has TLS.
	for _, tc := range []struct {
		name       string
		tlsMembers bool
		memberTLS  bool
		// want is what happens: "call" (the call returns its payload),
		// "join fails" or "connect fails".
		want string
	}{
		{"both sides", true, true, "call"},
		{"a member without TLS", true, false, "join fails"},
		{"a forwarder that dials members without TLS", false, true, "connect fails"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := spawn(t, slices.Concat(base, fwdTLS, []string{"TETHER_TLS_MEMBERS=" + strconv.FormatBool(tc.tlsMembers)}))
			p.waitReady(t, creds(t, ca, clientCert, clientKey))
			args := []string{"-group", "echo", "-view-provider", "embedded", "-forwarder-url", p.url, "-channel-providers", "tcp"}
			if tc.memberTLS {
				args = append(args, memberTLS...)
			}
			m := spawnMember(t, "echo-1", "tcp://127.0.0.1:0", args...)
			c := tlsClient(t, p.url, creds(t, ca, clientCert, clientKey))

			if tc.want == "join fails" {
				select {
				case <-m.exited:
				case <-time.After(timeout):
					t.Fatalf("the member without TLS did not give up joining in %v:\n%s", timeout, m.stderr.text())
				}
				if code := m.cmd.ProcessState.ExitCode(); code != 1 {
					t.Errorf("the member's exit status %d, want 1", code)
				}
				if out := m.stderr.text(); !strings.HasPrefix(out, "tether-echo-member: member echo-1: join echo: rpc error: code = Unavailable") || strings.Contains(out, "\n") {
					t.Errorf("the member's stderr %q, want one line saying the join is unavailable", out)
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				v, err := c.View(ctx, "echo")
				if err != nil {
					t.Fatal(err)
				}
				if len(v.Members) != 0 {
					t.Errorf("the member without TLS is in the view: %+v", v)
				}
				return
			}

			m.stderr.waitFor(t, 0, `^ready tcp://127\.0\.0\.1:`)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			begin := time.Now()
			conn, err := c.Connect(ctx, "echo")
			if tc.want == "connect fails" {
				if err == nil {
					_ = conn.Close(ctx)
					t.Fatal("the forwarder reached a member that requires mTLS without it")
				}
				// The member's TLS listener refuses the plain connection:
				// Unavailable, at once rather than at the deadline.
				if status.Code(err) != codes.Unavailable || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
					t.Fatalf("Connect failed after %v with %v, want Unavailable before the deadline", time.Since(begin), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v\nforwarder:\n%s\nmember:\n%s", err, p.stderr.text(), m.stderr.text())
			}
			t.Cleanup(func() { _ = conn.Close(context.Background()) })
			if reply, err := conn.Call(ctx, []byte("over mTLS")); err != nil || string(reply) != "over mTLS" {
				t.Fatalf("Call: %q, %v", reply, err)
			}
		})
	}
}

// creds returns the dial option of a client presenting certPEM, trusting
// the CA.
func creds(t testing.TB, ca *testca.CA, certPEM, keyPEM []byte) grpc.DialOption {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS13}))
}

// tlsClient dials the forwarder at url with opts and tcp channels, with a
// client that logs nothing; it is closed when the test ends.
func tlsClient(t testing.TB, url string, opts ...grpc.DialOption) *client.Client {
	t.Helper()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	c, err := client.Dial(url, client.WithDialOptions(opts...), client.WithProviders(tcp.New()), client.WithLogger(logrus.NewEntry(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
