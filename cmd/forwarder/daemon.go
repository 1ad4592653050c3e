package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tether-mesh/tether/internal/grpcopts"
	"github.com/tether-mesh/tether/pkg/forwarder"
	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view/membership"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

// daemon is a running forwarder: its chain, its gRPC server on the listen
// URL and its HTTP server on the metrics address.
type daemon struct {
	cfg      Config
	log      *logrus.Entry
	views    *views
	fwd      *forwarder.Forwarder
	grpc     *grpc.Server
	health   *health.Server
	services []string // the names gRPC health reports, "" first
	http     *http.Server
	inflight *inflight

	// cancel ends the forwarder's life: view refresh's watches and the
	// heal tracker.
	cancel context.CancelFunc
	// served, httpServed and tracked are closed when the gRPC server, the
	// HTTP server and the heal tracker have returned.
	served, httpServed, tracked chan struct{}

	mu       sync.Mutex
	stopping bool
	serving  bool
}

// start starts the forwarder and returns once it is ready. It prints, on
// stdout, the URL it listens on ("listening unix:///..."), the metrics
// address ("metrics 127.0.0.1:9090") and "ready"; a test reads them to find
// a forwarder started on port 0. Nothing is left running when it fails.
func start(ctx context.Context, cfg Config, logger *logrus.Logger, stdout io.Writer) (_ *daemon, err error) {
	log := logrus.NewEntry(logger)
	var serverOpts []grpc.ServerOption
	var memberOpts []grpc.DialOption // the dials to members: plain gRPC unless TETHER_TLS_MEMBERS
	if cfg.TLS() {
		files, err := readTLS(cfg)
		if err != nil {
			return nil, err
		}
		serverOpts = append(serverOpts, grpc.Creds(files.server()))
		if bool(cfg.TLSMembers) {
			memberOpts = append(memberOpts, grpc.WithTransportCredentials(files.client()))
		}
	}

	// What can fail comes first, so that nothing is served half-way: the
	// metrics address, the view provider, then the socket.
	var lc net.ListenConfig
	httpLis, err := lc.Listen(ctx, "tcp", string(cfg.MetricsAddr))
	if err != nil {
		return nil, &settingError{Key: "TETHER_METRICS_ADDR", Value: string(cfg.MetricsAddr), Err: listenError(err)}
	}
	defer func() {
		if err != nil {
			_ = httpLis.Close()
		}
	}()
	v, err := openViews(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() { //nolint:contextcheck // closing the providers takes no context; it is bounded by their own
		if err != nil {
			v.close()
		}
	}()
	lis, err := sockurl.Listen(ctx, string(cfg.ListenURL), os.FileMode(cfg.SocketMode))
	if err != nil {
		return nil, &settingError{Key: "TETHER_LISTEN_URL", Value: string(cfg.ListenURL), Err: socketError(string(cfg.ListenURL), err)}
	}

	d := &daemon{
		cfg: cfg, log: log, views: v, inflight: &inflight{},
		served: make(chan struct{}), httpServed: make(chan struct{}), tracked: make(chan struct{}),
	}
	reg := prometheus.NewRegistry()
	viewMetrics := metrics.NewViews(v.provider, metrics.WithQueryTimeout(time.Duration(cfg.DialTimeout)))
	heals := newHealTracker(metrics.NewHeals("forwarder", healByView, healByClient), log)
	grpcMetrics := metrics.NewGRPC("forwarder")

	// The forwarder outlives start's deadline, not its values.
	var fctx context.Context
	fctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	policy := viewrefresh.Policy(cfg.SelectionPolicy)
	d.fwd = forwarder.New(fctx, forwarder.Config{
		Name:        string(cfg.Name),
		Views:       heals.Provider(viewMetrics.Provider()),
		Policy:      &policy,
		DialTimeout: time.Duration(cfg.DialTimeout),
		DialOptions: memberOpts,
		Log:         log,
		// The chain's debug logging costs one level check per call until
		// the level is debug (SIGUSR1).
	})
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: "forwarder", Name: "connections",
			Help: "Connections the forwarder holds (open, or being opened).",
		}, func() float64 { return float64(d.fwd.Connections()) }),
		grpcMetrics, heals.heals, viewMetrics,
	)

	d.grpc = grpc.NewServer(append(append(grpcopts.ServerOptions(), serverOpts...),
		grpc.ChainUnaryInterceptor(d.inflight.UnaryServerInterceptor(), grpcMetrics.UnaryServerInterceptor(), heals.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor(), trackJoins(viewMetrics)),
	)...)
	d.fwd.Register(d.grpc)
	if v.embedded != nil {
		membership.Register(d.grpc, v.embedded, membership.WithServerLogger(log))
	}
	d.health = health.NewServer()
	healthpb.RegisterHealthServer(d.grpc, d.health)
	reflection.Register(d.grpc)
	d.services = []string{""}
	for name := range d.grpc.GetServiceInfo() {
		d.services = append(d.services, name)
	}
	slices.Sort(d.services)
	for _, s := range d.services {
		d.health.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	grpcMetrics.Init(d.grpc)

	d.http = newHTTPServer(newHTTPHandler(reg, d.ready, bool(cfg.Pprof), log))
	go func() {
		defer close(d.tracked)
		heals.run(fctx, d.fwd.Monitor)
	}()
	go func() {
		defer close(d.served)
		if err := d.grpc.Serve(lis); err != nil {
			log.WithError(err).Error("the gRPC server failed")
		}
	}()
	go func() {
		defer close(d.httpServed)
		if err := d.http.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("the metrics server failed")
		}
	}()

	served := string(cfg.ListenURL)
	if a, ok := lis.Addr().(*net.TCPAddr); ok {
		served = "tcp://" + a.String()
	}
	fmt.Fprintf(stdout, "listening %s\nmetrics %s\n", served, httpLis.Addr())
	d.setServing(true)
	fmt.Fprintln(stdout, "ready")
	log.WithFields(logrus.Fields{
		"name": cfg.Name, "listen_url": served, "metrics_addr": httpLis.Addr().String(),
		"view_provider": cfg.ViewProvider, "policy": cfg.SelectionPolicy.String(), "mtls": cfg.TLS(), "mtls_members": bool(cfg.TLSMembers),
	}).Info("forwarder ready")
	return d, nil
}

// ready reports whether the forwarder serves: listening, its view provider
// working, not stopping. gRPC health follows what it finds.
func (d *daemon) ready(ctx context.Context) error {
	d.mu.Lock()
	stopping := d.stopping
	d.mu.Unlock()
	if stopping {
		return errors.New("stopping")
	}
	err := d.views.check(ctx)
	d.setServing(err == nil)
	if err != nil {
		return fmt.Errorf("view provider %s: %w", d.cfg.ViewProvider, err)
	}
	return nil
}

// setServing sets every service's gRPC health status, unless stopping.
func (d *daemon) setServing(ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping || d.serving == ok {
		return
	}
	d.serving = ok
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	} else {
		d.log.Warn("not ready: the view provider does not answer")
	}
	for _, s := range d.services {
		d.health.SetServingStatus(s, st)
	}
}

// stop stops the forwarder gracefully within stopTimeout and returns the
// exit code:
//
//  1. gRPC health reports NOT_SERVING and /readyz 503;
//  2. the gRPC server stops accepting (its listener closes, which removes
//     the unix socket; clients get GOAWAY);
//  3. every connection is closed from the start of the chain, at its member
//     too, and again for those that calls in flight opened meanwhile;
//  4. view refresh stops, and the view provider closes: members joined
//     through the membership service see their session end;
//  5. the streams that never end on their own (monitor subscriptions,
//     health watches) are cut, and the metrics server stops.
//
// ctx carries values only: a stop is bounded by stopTimeout, not by ctx.
func (d *daemon) stop(ctx context.Context, reason string) int {
	ctx = context.WithoutCancel(ctx)
	begin := time.Now()
	deadline := begin.Add(stopTimeout)
	d.log.WithField("reason", reason).Info("stopping")
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.health.Shutdown()

	graceful := make(chan struct{})
	go func() {
		defer close(graceful)
		d.grpc.GracefulStop()
	}()

	closeCtx, cancel := context.WithDeadline(ctx, deadline.Add(-2*time.Second))
	open := d.fwd.Connections()
	if err := d.fwd.Close(closeCtx); err != nil {
		d.log.WithError(err).Warn("stopping: a connection did not close cleanly")
	}
	if err := d.inflight.wait(closeCtx); err != nil {
		d.log.WithError(err).Warn("stopping: requests still running; cutting them")
	}
	if err := d.fwd.Close(closeCtx); err != nil {
		d.log.WithError(err).Warn("stopping: a connection did not close cleanly")
	}
	cancel()
	d.cancel()
	<-d.tracked
	d.views.close() //nolint:contextcheck // closing the providers takes no context; it is bounded by their own

	d.grpc.Stop()
	<-graceful
	<-d.served
	httpCtx, cancelHTTP := context.WithDeadline(ctx, deadline)
	defer cancelHTTP()
	if err := d.http.Shutdown(httpCtx); err != nil {
		_ = d.http.Close()
	}
	<-d.httpServed
	d.log.WithFields(logrus.Fields{"connections_closed": open, "took": time.Since(begin).Round(time.Millisecond)}).Info("stopped")
	return exitOK
}

// socketError says why the gRPC listener could not be opened.
func socketError(raw string, err error) error {
	network, address, perr := sockurl.Parse(raw)
	switch {
	case perr != nil:
		return err
	case errors.Is(err, sockurl.ErrInUse):
		return sockurl.ErrInUse
	case errors.Is(err, sockurl.ErrNotSocket):
		return sockurl.ErrNotSocket
	case network == "unix" && errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the directory %s does not exist", filepath.Dir(address))
	case network == "unix" && errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("permission denied in %s", filepath.Dir(address))
	}
	return listenError(err)
}

// listenError says why a TCP listener could not be opened.
func listenError(err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return errors.New("the address is in use")
	case errors.Is(err, syscall.EACCES):
		return errors.New("permission denied (a port below 1024 needs privilege)")
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
