package etcd_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tether-mesh/tether/internal/etcdtest"
	"github.com/tether-mesh/tether/pkg/view/etcd"
)

// TestTLSFilesConfig: the files give a TLS configuration, or an error
// naming the file (or the endpoint) that cannot be used.
func TestTLSFilesConfig(t *testing.T) {
	files := etcdtest.NewTLSFiles(t)
	https := []string{"https://127.0.0.1:2379"}
	for _, tc := range []struct {
		name      string
		files     etcd.TLSFiles
		endpoints []string
		wantNil   bool
		wantCerts int
		wantRoots bool
		which     string // the TLSFileError's file, if any
		plain     bool   // ErrPlainEndpoint
	}{
		{name: "no files", endpoints: []string{"http://127.0.0.1:2379"}, wantNil: true},
		{name: "CA only", files: etcd.TLSFiles{CA: files.CA}, endpoints: https, wantRoots: true},
		{name: "client certificate, system roots", files: etcd.TLSFiles{Cert: files.ClientCert, Key: files.ClientKey}, endpoints: https, wantCerts: 1},
		{name: "all three", files: etcd.TLSFiles{CA: files.CA, Cert: files.ClientCert, Key: files.ClientKey}, endpoints: []string{"https://a:2379", "unixs:///run/etcd.sock"}, wantCerts: 1, wantRoots: true},
		{name: "http endpoint", files: etcd.TLSFiles{CA: files.CA}, endpoints: []string{"https://a:2379", "http://b:2379"}, plain: true},
		{name: "certificate without key", files: etcd.TLSFiles{Cert: files.ClientCert}, endpoints: https, which: "Key"},
		{name: "key without certificate", files: etcd.TLSFiles{Key: files.ClientKey}, endpoints: https, which: "Cert"},
		{name: "key of another certificate", files: etcd.TLSFiles{Cert: files.ClientCert, Key: files.ServerKey}, endpoints: https, which: "Cert"},
		{name: "missing CA", files: etcd.TLSFiles{CA: filepath.Join(t.TempDir(), "none.pem")}, endpoints: https, which: "CA"},
		{name: "CA without PEM", files: etcd.TLSFiles{CA: files.ClientKey}, endpoints: https, which: "CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.files.Config(tc.endpoints)
			var fe *etcd.TLSFileError
			switch {
			case tc.plain:
				if !errors.Is(err, etcd.ErrPlainEndpoint) || !strings.Contains(err.Error(), "http://b:2379") {
					t.Fatalf("got %v, want ErrPlainEndpoint naming http://b:2379", err)
				}
				return
			case tc.which != "":
				if !errors.As(err, &fe) || fe.Which != tc.which {
					t.Fatalf("got %v, want a TLSFileError for %s", err, tc.which)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tc.wantNil:
				if cfg != nil {
					t.Fatalf("got %+v, want nil", cfg)
				}
				return
			}
			if len(cfg.Certificates) != tc.wantCerts || (cfg.RootCAs != nil) != tc.wantRoots {
				t.Fatalf("%d certificates, roots %v; want %d, %v", len(cfg.Certificates), cfg.RootCAs != nil, tc.wantCerts, tc.wantRoots)
			}
		})
	}
}

// TestTLSToEtcd: against an etcd that requires client certificates, a
// client with the files reads and writes; one without a client
// certificate, or trusting another CA, does not.
func TestTLSToEtcd(t *testing.T) {
	files := etcdtest.NewTLSFiles(t)
	url := files.Start(t).URL
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("etcd URL %s, want https://", url)
	}
	for _, tc := range []struct {
		name  string
		files etcd.TLSFiles
		ok    bool
	}{
		{"CA and client certificate", etcd.TLSFiles{CA: files.CA, Cert: files.ClientCert, Key: files.ClientKey}, true},
		{"no client certificate", etcd.TLSFiles{CA: files.CA}, false},
		{"another CA", etcd.TLSFiles{CA: files.OtherCA, Cert: files.ClientCert, Key: files.ClientKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.files.Config([]string{url})
			if err != nil {
				t.Fatal(err)
			}
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, TLS: cfg, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close() //nolint:errcheck // nothing to tell
			wait := 10 * time.Second
			if !tc.ok {
				wait = time.Second // the refusal is the wait running out
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_, err = c.Put(ctx, "/tls-test", tc.name)
			if (err == nil) != tc.ok {
				t.Fatalf("put: %v; want success %v", err, tc.ok)
			}
		})
	}
}
