// Command tether-echo-member is an example group member: it joins a group
// and answers every call with the call's payload. Its settings come from
// flags or from the TETHER_ environment variables named in -help. With
// -view-provider etcd it registers in etcd directly (-etcd-endpoints) under a
// lease of -etcd-lease-ttl (TETHER_ETCD_LEASE_TTL, 2s) instead of joining
// through the forwarder.
//
// To try it on one machine, from the repository root: build the forwarder,
// the member and the client (examples/echo-client), start the forwarder on a
// socket under /tmp and the member beside it, and call the member:
//
//	go build -o tether-forwarder ./cmd/forwarder
//	go build -o tether-echo-member ./examples/echo-member
//	go build -o tether-echo-client ./examples/echo-client
//	TETHER_LISTEN_URL=unix:///tmp/tether.sock TETHER_METRICS_ADDR=127.0.0.1:9090 ./tether-forwarder &
//	./tether-echo-member -group echo -id echo-1 \
//	    -forwarder-url unix:///tmp/tether.sock \
//	    -listen-url unix:///tmp/echo-1.sock &
//	./tether-echo-client -forwarder-url unix:///tmp/tether.sock -group echo -n 5
//
// (start each once the one before has printed "ready"; stop them with kill
// %1 %2, which removes their sockets). The Kubernetes manifests in
// deployments/ use the node directory instead: the forwarder on
// unix:///var/lib/tether/forwarder.sock and shm channels in
// /var/lib/tether/shm.
//
// With -tls-cert-file, -tls-key-file and -tls-ca-file (TETHER_TLS_CERT_FILE,
// TETHER_TLS_KEY_FILE, TETHER_TLS_CA_FILE; all three or none) it uses mTLS,
// TLS 1.3 at least, on its gRPC: its listener requires a client certificate
// the CA signed (the forwarder's, which TETHER_TLS_MEMBERS=true makes it
// present), and it joins through the forwarder with its certificate as the
// client certificate, verifying the forwarder's against the CA. The
// certificate therefore needs both server and client authentication, and
// must name the host of the member's URL (an IP address for tcp://, DNS name
// localhost for unix://). Those settings do not apply to etcd.
//
// With -view-provider etcd and https:// endpoints, it reaches etcd over TLS:
// -etcd-ca-file (TETHER_ETCD_CA_FILE) is the CA of etcd's server
// certificates (default: the system's roots), and -etcd-cert-file with
// -etcd-key-file (TETHER_ETCD_CERT_FILE, TETHER_ETCD_KEY_FILE) the client
// certificate for etcd's client certificate authentication.
//
// With -trace it prints one line per message on standard output
// ("call <conn> <retry> <payload>"), which tests use to check that every
// retry is marked.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/member"
	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/rdma/shm"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/etcd"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

// setting is a flag whose default comes from a TETHER_ environment variable.
func setting(name, env, def, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return flag.String(name, def, fmt.Sprintf("%s (env %s)", usage, env))
}

func main() {
	host, _ := os.Hostname()
	group := setting("group", "TETHER_GROUP", "", "group to join (required)")
	id := setting("id", "TETHER_MEMBER_ID", host, "member ID")
	provider := setting("view-provider", "TETHER_VIEW_PROVIDER", "embedded", "embedded (join through the forwarder) or etcd")
	forwarder := setting("forwarder-url", "TETHER_FORWARDER_URL", "unix:///var/lib/tether/forwarder.sock", "forwarder's membership service")
	etcdEndpoints := setting("etcd-endpoints", "TETHER_ETCD_ENDPOINTS", "", "etcd endpoints, comma-separated; https:// with the -etcd-*-file settings (the -tls-* settings do not apply to etcd)")
	etcdCA := setting("etcd-ca-file", "TETHER_ETCD_CA_FILE", "", "the CA that signs etcd's server certificates (PEM; default with https:// endpoints: the system's roots)")
	etcdCert := setting("etcd-cert-file", "TETHER_ETCD_CERT_FILE", "", "the client certificate for etcd's client certificate authentication (PEM), with its key")
	etcdKey := setting("etcd-key-file", "TETHER_ETCD_KEY_FILE", "", "the client certificate's private key (PEM)")
	etcdLeaseTTL := setting("etcd-lease-ttl", "TETHER_ETCD_LEASE_TTL", "2s", "lease TTL of the registration in etcd, rounded up to whole seconds (-view-provider etcd): a member that dies leaves the view when it expires")
	listen := setting("listen-url", "TETHER_LISTEN_URL", "", "the member's endpoint: unix:///path or tcp://host:port (required)")
	advertise := setting("advertise-url", "TETHER_ADVERTISE_URL", "", "the URL of the endpoint published in the views, when not the listen URL")
	channels := setting("channel-providers", "TETHER_CHANNEL_PROVIDERS", "shm,tcp", "channel providers, in order of preference")
	tcpAddr := setting("tcp-channel-addr", "TETHER_TCP_CHANNEL_ADDR", "127.0.0.1:0", "address of the tcp channel listener")
	tcpAdvertise := setting("tcp-channel-advertise", "TETHER_TCP_CHANNEL_ADVERTISE", "", "address of the tcp channel published to clients, when not the listener's")
	shmDir := setting("shm-dir", "TETHER_SHM_DIR", "", "directory of the shm channel socket (default: a private temporary one)")
	logLevel := setting("log-level", "TETHER_LOG_LEVEL", "info", "log level")
	metricsAddr := setting("metrics-addr", "TETHER_METRICS_ADDR", "", "HTTP address of /metrics (channel messages and bytes); empty: none")
	tlsCert := setting("tls-cert-file", "TETHER_TLS_CERT_FILE", "", "the member's certificate (PEM), for server and client authentication; with the key and CA files, mTLS on the gRPC listener and on the join through the forwarder (not to etcd: see -etcd-cert-file)")
	tlsKey := setting("tls-key-file", "TETHER_TLS_KEY_FILE", "", "the certificate's private key (PEM)")
	tlsCA := setting("tls-ca-file", "TETHER_TLS_CA_FILE", "", "the CA (PEM) that signs the certificates of the forwarder and of whoever calls the member")
	trace := flag.Bool("trace", false, "print one line per message on standard output")
	flag.Parse()

	log := logrus.New()
	log.SetOutput(os.Stderr)
	if lvl, err := logrus.ParseLevel(*logLevel); err == nil {
		log.SetLevel(lvl)
	}
	if err := run(log, config{
		group: *group, id: *id, provider: *provider, forwarder: *forwarder, etcd: *etcdEndpoints, etcdLeaseTTL: *etcdLeaseTTL,
		metrics: *metricsAddr, listen: *listen, advertise: *advertise, channels: *channels, tcpAddr: *tcpAddr, tcpAdvertise: *tcpAdvertise, shmDir: *shmDir, trace: *trace,
		tlsCert: *tlsCert, tlsKey: *tlsKey, tlsCA: *tlsCA,
		etcdTLS: etcd.TLSFiles{CA: *etcdCA, Cert: *etcdCert, Key: *etcdKey},
	}); err != nil {
		fmt.Fprintln(os.Stderr, "tether-echo-member:", err)
		os.Exit(1)
	}
}

type config struct {
	group, id, provider, forwarder, etcd, etcdLeaseTTL, metrics, listen, advertise, channels, tcpAddr, tcpAdvertise, shmDir string
	tlsCert, tlsKey, tlsCA                                                                                                  string
	etcdTLS                                                                                                                 etcd.TLSFiles
	trace                                                                                                                   bool
}

func run(log *logrus.Logger, cfg config) error {
	if cfg.group == "" || cfg.listen == "" {
		return errors.New("-group and -listen-url are required")
	}
	serverOpts, dialOpts, err := mutualTLS(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	views, closeViews, err := openViews(cfg, dialOpts)
	if err != nil {
		return err
	}
	defer closeViews()

	var chs []member.Channel
	for _, name := range strings.Split(cfg.channels, ",") {
		switch strings.TrimSpace(name) {
		case "shm":
			addr := ""
			if cfg.shmDir != "" {
				addr = cfg.shmDir + "/" + cfg.id + ".shm.sock"
			}
			chs = append(chs, member.Channel{Provider: shm.New(), Addr: addr})
		case "tcp":
			chs = append(chs, member.Channel{Provider: tcp.New(), Addr: cfg.tcpAddr, Advertise: cfg.tcpAdvertise})
		case "":
		default:
			return fmt.Errorf("-channel-providers: unknown provider %q (shm, tcp)", name)
		}
	}

	traces, stopTraces := tracer(cfg.trace)
	defer stopTraces()
	handler := func(_ context.Context, req *call.Request) ([]byte, error) {
		if traces != nil {
			traces <- fmt.Sprintf("call %s %v %s\n", req.ConnID, req.Retry, req.Payload)
		}
		return req.Payload, nil
	}
	channelMetrics, stopMetrics, err := serveMetrics(cfg.metrics)
	if err != nil {
		return err
	}
	defer stopMetrics()
	joinCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := member.Start(joinCtx, member.Config{
		Group: cfg.group, ID: cfg.id, Views: views, ListenURL: cfg.listen, AdvertiseURL: cfg.advertise,
		Channels: chs, Handler: handler, Log: logrus.NewEntry(log), Metrics: channelMetrics, ServerOptions: serverOpts,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "ready %s\n", m.URL())
	<-ctx.Done()
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelStop()
	return m.Stop(stopCtx)
}

// mutualTLS reads the TLS files, once: all three or none. It returns the
// gRPC listener's options (client certificates required, verified against
// the CA) and those of the dial to the forwarder's membership service (the
// member's certificate as the client certificate, the CA as roots); none
// without the files.
func mutualTLS(cfg config) ([]grpc.ServerOption, []grpc.DialOption, error) {
	files := []struct{ flag, env, path string }{
		{"-tls-cert-file", "TETHER_TLS_CERT_FILE", cfg.tlsCert},
		{"-tls-key-file", "TETHER_TLS_KEY_FILE", cfg.tlsKey},
		{"-tls-ca-file", "TETHER_TLS_CA_FILE", cfg.tlsCA},
	}
	set := 0
	for _, f := range files {
		if f.path != "" {
			set++
		}
	}
	switch set {
	case 0:
		return nil, nil, nil
	case len(files):
	default:
		for _, f := range files {
			if f.path == "" {
				return nil, nil, fmt.Errorf("%s (%s) is not set: mTLS needs -tls-cert-file, -tls-key-file and -tls-ca-file, all three or none", f.flag, f.env)
			}
		}
	}
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, nil, fmt.Errorf("-tls-cert-file and -tls-key-file: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.tlsCA)
	if err != nil {
		return nil, nil, fmt.Errorf("-tls-ca-file: %w", err)
	}
	ca := x509.NewCertPool()
	if !ca.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("-tls-ca-file: %s: no PEM certificate in the file", cfg.tlsCA)
	}
	server := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
	client := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		MinVersion:   tls.VersionTLS13,
	})
	return []grpc.ServerOption{grpc.Creds(server)}, []grpc.DialOption{grpc.WithTransportCredentials(client)}, nil
}

// openViews opens the view provider; dialOpts are the options of the dial
// to the forwarder (-view-provider embedded).
func openViews(cfg config, dialOpts []grpc.DialOption) (view.Provider, func(), error) {
	ttl, err := leaseTTL(cfg.etcdLeaseTTL) // checked with either provider: a bad value is a mistake
	if err != nil {
		return nil, nil, err
	}
	if cfg.etcdTLS.Set() && cfg.provider != "etcd" {
		return nil, nil, errors.New("-etcd-ca-file, -etcd-cert-file and -etcd-key-file are for TLS to etcd: set -view-provider etcd, or unset them")
	}
	switch cfg.provider {
	case "embedded":
		c, err := membership.Dial(cfg.forwarder, membership.WithDialOptions(dialOpts...))
		if err != nil {
			return nil, nil, fmt.Errorf("-forwarder-url: %w", err)
		}
		return c, func() { _ = c.Close() }, nil
	case "etcd":
		if cfg.etcd == "" {
			return nil, nil, errors.New("-etcd-endpoints is required with -view-provider etcd")
		}
		endpoints := strings.Split(cfg.etcd, ",")
		tlsConfig, err := cfg.etcdTLS.Config(endpoints)
		if err != nil {
			return nil, nil, etcdTLSError(err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: tlsConfig})
		if err != nil {
			return nil, nil, fmt.Errorf("-etcd-endpoints: %w", err)
		}
		return etcd.New(cli, etcd.WithTTL(ttl)), func() { _ = cli.Close() }, nil
	}
	return nil, nil, fmt.Errorf("-view-provider: %q is neither embedded nor etcd", cfg.provider)
}

// etcdTLSError names the flag of a TLS file, or the endpoints, that
// etcd.TLSFiles.Config refused.
func etcdTLSError(err error) error {
	var fe *etcd.TLSFileError
	if errors.As(err, &fe) {
		flag := map[string]string{"CA": "-etcd-ca-file", "Cert": "-etcd-cert-file", "Key": "-etcd-key-file"}[fe.Which]
		if fe.Path == "" {
			return fmt.Errorf("%s: %w", flag, fe.Err)
		}
		return fmt.Errorf("%s: %s: %w", flag, fe.Path, fe.Err)
	}
	return fmt.Errorf("-etcd-endpoints: %w", err)
}

// leaseTTL reads -etcd-lease-ttl: a positive duration such as 2s.
func leaseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("-etcd-lease-ttl (TETHER_ETCD_LEASE_TTL): %q: want a positive duration such as 2s", s)
	}
	return d, nil
}

// serveMetrics serves the channel metrics on addr ("" serves nothing).
func serveMetrics(addr string) (*metrics.Channels, func(), error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	reg := prometheus.NewRegistry()
	ch := metrics.NewChannels()
	reg.MustRegister(ch)
	var lc net.ListenConfig
	lis, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return ch, func() { _ = srv.Close() }, nil
}

// tracer returns the queue of trace lines (nil when off) and its stop. A
// goroutine writes them to standard output, flushing when the queue is
// empty: a reader that falls behind for a moment does not hold up calls.
// The queue is never closed: a handler still running at the end cannot
// send on a closed channel.
func tracer(on bool) (chan<- string, func()) {
	if !on {
		return nil, func() {}
	}
	lines := make(chan string, 1<<16)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		out := bufio.NewWriterSize(os.Stdout, 256<<10)
		defer out.Flush() //nolint:errcheck // nobody to tell
		for {
			select {
			case line := <-lines:
				_, _ = out.WriteString(line)
				if len(lines) == 0 {
					_ = out.Flush()
				}
			case <-stop:
				for len(lines) > 0 {
					_, _ = out.WriteString(<-lines)
				}
				return
			}
		}
	}()
	return lines, func() {
		close(stop)
		<-done
	}
}
