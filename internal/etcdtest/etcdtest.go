// Package etcdtest starts a one-node etcd server inside a test's process,
// on loopback ports the kernel picks, with fast elections and its data in
// the test's temporary directory, for the tests of every package that
// talks to etcd.
package etcdtest

import (
	"net/url"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running etcd.
type Server struct {
	// URL is the client URL ("http://127.0.0.1:port", https:// with
	// WithClientTLS).
	URL  string
	e    *embed.Etcd
	once sync.Once
}

// Option configures Start.
type Option func(*embed.Config)

// WithClientTLS has the server take clients over TLS only, with the
// certificate and key given (PEM files), and require client certificates
// signed by the CA file: URL is then https://.
func WithClientTLS(certFile, keyFile, caFile string) Option {
	return func(cfg *embed.Config) {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: true}
		for _, urls := range [][]url.URL{cfg.ListenClientUrls, cfg.AdvertiseClientUrls} {
			for i := range urls {
				urls[i].Scheme = "https"
			}
		}
	}
}

// Start starts a server, closed when tb ends.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = tb.TempDir()
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.TickMs = 10
	cfg.ElectionMs = 50
	cfg.UnsafeNoFsync = true
	local := func(port string) []url.URL { return []url.URL{{Scheme: "http", Host: "127.0.0.1:" + port}} }
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = local("0"), local("0")
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = local("0"), local("0")
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	for _, o := range opts {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		tb.Fatal("etcd did not start")
	}
	return &Server{URL: cfg.AdvertiseClientUrls[0].Scheme + "://" + e.Clients[0].Addr().String(), e: e}
}

// HardStop halts the server at once: its connections stay open and
// requests get no answer, as from a server that hangs (closing it would wait
// for its clients' streams). The server is still closed when the test ends.
func (s *Server) HardStop() {
	s.once.Do(s.e.Server.HardStop)
}
