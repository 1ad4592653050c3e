package sandbox

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/internal/grpcopts"
	"github.com/tether-mesh/tether/pkg/forwarder"
	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/membership"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

// ForwarderOption configures a sandbox forwarder.
type ForwarderOption func(*forwarderOptions)

type forwarderOptions struct {
	heartbeat, lease time.Duration
	lifetime         time.Duration
	dialTimeout      time.Duration
	policy           *viewrefresh.Policy
}

// WithLease sets the embedded provider's heartbeat interval and lease time.
func WithLease(heartbeat, lease time.Duration) ForwarderOption {
	return func(o *forwarderOptions) { o.heartbeat, o.lease = heartbeat, lease }
}

// WithConnectionLifetime sets how long the forwarder's path segment lives
// at members without a refresh.
func WithConnectionLifetime(d time.Duration) ForwarderOption {
	return func(o *forwarderOptions) { o.lifetime = d }
}

// WithDialTimeout bounds the forwarder's wait for a member.
func WithDialTimeout(d time.Duration) ForwarderOption {
	return func(o *forwarderOptions) { o.dialTimeout = d }
}

// WithPolicy sets the forwarder's selection policy.
func WithPolicy(p viewrefresh.Policy) ForwarderOption {
	return func(o *forwarderOptions) { o.policy = &p }
}

// Forwarder is an in-process forwarder serving its chain, its monitor and
// the membership service of its embedded provider on a unix socket.
type Forwarder struct {
	s    *Sandbox
	name string
	sock string
	opts forwarderOptions

	mu       sync.Mutex
	provider *embedded.Provider
	fwd      *forwarder.Forwarder
	srv      *grpc.Server
	cancel   context.CancelFunc
	serving  sync.WaitGroup // one Serve per listener
	running  bool
	tcp      []string // TCP addresses it also serves on, for members in namespaces
}

// Forwarder starts a forwarder.
func (s *Sandbox) Forwarder(opts ...ForwarderOption) *Forwarder {
	s.t.Helper()
	s.mu.Lock()
	name := fmt.Sprintf("fwd-%d", len(s.stops))
	s.mu.Unlock()
	f := &Forwarder{s: s, name: name, sock: s.path(name + ".sock")}
	for _, o := range opts {
		o(&f.opts)
	}
	if err := f.start(); err != nil {
		s.t.Fatal(err)
	}
	s.onCleanup(f.Stop)
	return f
}

func (f *Forwarder) start() error {
	var popts []embedded.Option
	if f.opts.lease > 0 {
		popts = append(popts, embedded.WithLease(f.opts.heartbeat, f.opts.lease))
	}
	popts = append(popts, embedded.WithLogger(f.s.log))
	provider := embedded.New(popts...)
	ctx, cancel := context.WithCancel(context.Background())
	fwd := forwarder.New(ctx, forwarder.Config{
		Name: f.name, Views: provider, Policy: f.opts.policy,
		DialTimeout: f.opts.dialTimeout, Lifetime: f.opts.lifetime, Log: f.s.log,
	})
	srv := grpc.NewServer(grpcopts.ServerOptions()...)
	fwd.Register(srv)
	membership.Register(srv, provider, membership.WithServerLogger(f.s.log))
	lis, err := sockurl.Listen(ctx, f.URL(), 0)
	if err != nil {
		cancel()
		_ = provider.Close()
		return fmt.Errorf("sandbox: forwarder %s: %w", f.name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.provider, f.fwd, f.srv, f.cancel, f.running = provider, fwd, srv, cancel, true
	f.serve(lis)
	for _, addr := range f.tcp {
		var lc net.ListenConfig
		tl, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return fmt.Errorf("sandbox: forwarder %s: %w", f.name, err)
		}
		f.serve(tl)
	}
	return nil
}

// serve serves the gRPC server on lis; f.mu is held.
func (f *Forwarder) serve(lis net.Listener) {
	srv := f.srv
	f.serving.Add(1)
	go func() {
		defer f.serving.Done()
		_ = srv.Serve(lis)
	}()
}

// listenTCP serves the forwarder also on a TCP port of ip (the host's end
// of a namespace's veth pair), from now on and after restarts, and returns
// its URL.
func (f *Forwarder) listenTCP(ip string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lc net.ListenConfig
	lis, err := lc.Listen(context.Background(), "tcp", ip+":0")
	if err != nil {
		return "", err
	}
	f.tcp = append(f.tcp, lis.Addr().String())
	f.serve(lis)
	return "tcp://" + lis.Addr().String(), nil
}

// Name returns the forwarder's name.
func (f *Forwarder) Name() string { return f.name }

// URL returns the forwarder's URL.
func (f *Forwarder) URL() string { return "unix://" + f.sock }

// Provider returns the forwarder's current view provider (a new one after
// Restart).
func (f *Forwarder) Provider() *embedded.Provider {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.provider
}

// Connections returns how many connections the forwarder holds.
func (f *Forwarder) Connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return 0
	}
	return f.fwd.Connections()
}

// Kill stops the forwarder as a crash would: its gRPC connections break, its
// state and its views are lost. Channels between clients and members, which
// do not pass through it, keep working.
func (f *Forwarder) Kill() {
	f.mu.Lock()
	if !f.running {
		f.mu.Unlock()
		return
	}
	f.running = false
	srv, cancel, provider, fwd := f.srv, f.cancel, f.provider, f.fwd
	f.mu.Unlock()
	// A crash stops everything at once. Here, in order: the views stop
	// (so that members whose streams break are not seen leaving, which
	// would move connections in the forwarder's last moments), then the
	// server (no client hears anything more), then the chain's state is
	// dropped without a word to the members.
	cancel()
	_ = provider.Close()
	srv.Stop()
	f.serving.Wait()
	fwd.Abort()
}

// Restart starts a killed forwarder again on the same socket, with empty
// state: members join again, clients refresh their connections.
func (f *Forwarder) Restart() {
	f.s.t.Helper()
	f.Kill()
	if err := f.start(); err != nil {
		f.s.t.Fatal(err)
	}
}

// Stop closes the forwarder's connections cleanly and stops it.
func (f *Forwarder) Stop() {
	f.mu.Lock()
	if !f.running {
		f.mu.Unlock()
		return
	}
	fwd := f.fwd
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), f.s.timeout)
	defer cancel()
	_ = fwd.Close(ctx)
	f.Kill()
}
