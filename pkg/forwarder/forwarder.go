// Package forwarder assembles the forwarder's server chain: the node-local
// broker that sends each client's connection to a member of its group and
// keeps it there, or moves it when the member leaves.
//
//	checkrequest ▸ updatepath ▸ expire ▸ refcount ▸ monitor ▸ viewrefresh ▸ connect
//
// The daemon around it is cmd/forwarder; tests and the sandbox build a
// forwarder in-process with New.
package forwarder

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/checkrequest"
	"github.com/tether-mesh/tether/pkg/connect"
	"github.com/tether-mesh/tether/pkg/expire"
	"github.com/tether-mesh/tether/pkg/monitor"
	"github.com/tether-mesh/tether/pkg/refcount"
	"github.com/tether-mesh/tether/pkg/updatepath"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

// Config describes a forwarder's chain.
type Config struct {
	// Name is the forwarder's path segment name (unique per node).
	Name string
	// Views is where group views come from.
	Views view.Provider
	// Policy chooses members (default viewrefresh.Rendezvous).
	Policy *viewrefresh.Policy
	// DialTimeout bounds reaching a member (default connect.DefaultDialTimeout).
	DialTimeout time.Duration
	// DialOptions are added to every connection to a member (credentials).
	DialOptions []grpc.DialOption
	// Lifetime is how long after a Request the forwarder's own path segment
	// expires at the member (default updatepath.DefaultLifetime).
	Lifetime time.Duration
	// Log is the logger (default: logrus's standard logger). At debug
	// level the chain logs what every element changes; below, that costs
	// one level check per call.
	Log *logrus.Entry
}

// Forwarder is the chain and the monitor service it feeds.
type Forwarder struct {
	// NetworkService is the chain, to serve with gRPC.
	NetworkService networkservice.NetworkServiceServer
	// Monitor is the MonitorConnection service of the chain's connections.
	Monitor monitor.Server
	connect chain.ServerElement
}

// New builds a forwarder; ctx bounds the view watches it starts.
func New(ctx context.Context, cfg Config) *Forwarder {
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	log := cfg.Log.WithField("forwarder", cfg.Name)
	policy := viewrefresh.Rendezvous
	if cfg.Policy != nil {
		policy = *cfg.Policy
	}
	var pathOpts []updatepath.Option
	if cfg.Lifetime > 0 {
		pathOpts = append(pathOpts, updatepath.WithLifetime(cfg.Lifetime))
	}
	connectOpts := []connect.Option{connect.WithLogger(log), connect.WithDialOptions(cfg.DialOptions...)}
	if cfg.DialTimeout > 0 {
		connectOpts = append(connectOpts, connect.WithDialTimeout(cfg.DialTimeout))
	}
	mon := monitor.NewServer()
	conn := connect.NewServer(connectOpts...)
	elems := []chain.ServerElement{
		chain.Logger(log),
		checkrequest.NewServer(),
		updatepath.NewServer(cfg.Name, pathOpts...),
		expire.NewServer(expire.WithLogger(log)),
		refcount.NewServer(),
		mon,
		viewrefresh.NewServer(ctx, cfg.Views, viewrefresh.WithPolicy(policy), viewrefresh.WithLogger(log)),
		conn,
	}
	return &Forwarder{NetworkService: chain.NewServer(elems...), Monitor: mon, connect: conn}
}

// Register serves the forwarder's NetworkService and MonitorConnection on s.
func (f *Forwarder) Register(s *grpc.Server) {
	networkservice.RegisterNetworkServiceServer(s, f.NetworkService)
	networkservice.RegisterMonitorConnectionServer(s, f.Monitor)
}

// Connections returns how many connections the forwarder holds.
func (f *Forwarder) Connections() int {
	return f.NetworkService.(chain.ConnectionCounter).Connections()
}

// Close closes every connection cleanly, at the members too.
func (f *Forwarder) Close(ctx context.Context) error {
	_, err := chain.CloseAll(ctx, f.NetworkService)
	return err
}

// Abort drops every connection as a crash would: the connections to the
// members are cut without a Close (the members keep their end until it
// expires or a client refreshes it through another forwarder), and the
// forwarder's own state is released.
func (f *Forwarder) Abort() {
	f.connect.(connect.HangUpper).HangUp()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = chain.CloseAll(ctx, f.NetworkService)
}
