package member

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/internal/grpcopts"
	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/checkrequest"
	"github.com/tether-mesh/tether/pkg/expire"
	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/monitor"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/refcount"
	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/updatepath"
	"github.com/tether-mesh/tether/pkg/view"
)

// Channel is one channel provider the member offers, and where it listens
// ("" lets the provider choose). Advertise, when set, is the address
// clients are told to dial instead (a proxy, a NAT, a pod IP).
type Channel struct {
	Provider  rdma.Provider
	Addr      string
	Advertise string
}

// Config describes a member.
type Config struct {
	// Group and ID name the member; Labels and Data travel with it in the
	// views (Data is what it offers when it joins).
	Group, ID string
	Labels    map[string]string
	Data      []byte
	// Views is how the member joins: membership.Dial(forwarderURL), or an
	// etcd provider.
	Views view.Provider
	// ListenURL is where the endpoint chain is served: unix:///path or
	// tcp://host:port (port 0 picks one). SocketMode is the unix socket's
	// mode (default 0600).
	ListenURL  string
	SocketMode os.FileMode
	// AdvertiseURL, when set, is the URL the member publishes in the views
	// for its endpoint chain instead of ListenURL.
	AdvertiseURL string
	// Channels are the providers the member offers, in its order of
	// preference.
	Channels []Channel
	// Handler handles every message and call.
	Handler call.Handler
	// AttachTimeout bounds how long a connection waits for its client's
	// channel (default rdma.DefaultAttachTimeout).
	AttachTimeout time.Duration
	// ServerOptions are added to the gRPC server (credentials for mTLS).
	ServerOptions []grpc.ServerOption
	// Metrics, when set, counts the messages and bytes of every channel.
	Metrics *metrics.Channels
	// Log is the logger (default: logrus's standard logger).
	Log *logrus.Entry
}

// Member is a running group member.
type Member struct {
	cfg       Config
	log       *logrus.Entry
	url       string
	listeners []rdma.Listener
	grpc      *grpc.Server
	endpoint  networkservice.NetworkServiceServer
	served    chan struct{}

	stop    context.CancelFunc
	joined  chan struct{} // closed at the first join
	mu      sync.Mutex
	current view.Membership
	stopped bool
	wg      sync.WaitGroup
}

// Start opens the listeners, serves the endpoint chain and joins the group.
// It returns once the member is in the group's view, or an error (and leaves
// nothing running).
func Start(ctx context.Context, cfg Config) (_ *Member, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	m := &Member{cfg: cfg, log: cfg.Log.WithFields(logrus.Fields{"group": cfg.Group, "member": cfg.ID}), served: make(chan struct{}), joined: make(chan struct{})}
	defer func() {
		if err != nil {
			m.closeListeners()
		}
	}()
	endpoints := map[string]string{}
	serverOpts := []rdma.ServerOption{
		rdma.WithServerLogger(m.log),
		rdma.WithChannelHandler(func(ctx context.Context, ch rdma.Channel) {
			if cfg.Metrics != nil {
				ch = cfg.Metrics.Wrap(ch)
			}
			_ = call.Serve(ctx, ch, cfg.Handler, m.log)
		}),
	}
	if cfg.AttachTimeout > 0 {
		serverOpts = append(serverOpts, rdma.WithAttachTimeout(cfg.AttachTimeout))
	}
	for _, c := range cfg.Channels {
		l, err := c.Provider.Listen(ctx, c.Addr)
		if err != nil {
			return nil, fmt.Errorf("member %s: listen for %s channels: %w", cfg.ID, c.Provider.Name(), err)
		}
		m.listeners = append(m.listeners, l)
		endpoints[c.Provider.Name()] = l.Addr()
		if c.Advertise != "" {
			endpoints[c.Provider.Name()] = c.Advertise
			l = advertised{Listener: l, addr: c.Advertise}
		}
		serverOpts = append(serverOpts, rdma.WithListener(c.Provider.Name(), l))
	}

	lis, err := sockurl.Listen(ctx, cfg.ListenURL, cfg.SocketMode)
	if err != nil {
		return nil, fmt.Errorf("member %s: listen on %s: %w", cfg.ID, cfg.ListenURL, err)
	}
	m.url = listenURL(cfg.ListenURL, lis)
	endpoints[view.EndpointGRPC] = m.url
	if cfg.AdvertiseURL != "" {
		endpoints[view.EndpointGRPC] = cfg.AdvertiseURL
	}

	mon := monitor.NewServer()
	m.endpoint = chain.NewServer(
		checkrequest.NewServer(),
		updatepath.NewServer(cfg.ID),
		expire.NewServer(expire.WithLogger(m.log)),
		refcount.NewServer(),
		mon,
		rdma.NewServer(serverOpts...),
	)
	m.grpc = grpc.NewServer(append(grpcopts.ServerOptions(), cfg.ServerOptions...)...)
	networkservice.RegisterNetworkServiceServer(m.grpc, m.endpoint)
	networkservice.RegisterMonitorConnectionServer(m.grpc, mon)
	go func() {
		defer close(m.served)
		_ = m.grpc.Serve(lis)
	}()
	defer func() {
		if err != nil {
			m.grpc.Stop()
			<-m.served
		}
	}()

	self := view.Member{ID: cfg.ID, Endpoints: endpoints, Labels: cfg.Labels, Data: cfg.Data}
	ms, err := cfg.Views.Join(ctx, cfg.Group, self)
	if err != nil {
		return nil, fmt.Errorf("member %s: join %s: %w", cfg.ID, cfg.Group, err)
	}
	m.current = ms
	runCtx, stop := context.WithCancel(context.Background())
	m.stop = stop
	m.wg.Add(1)
	go m.stay(runCtx, self, ms) //nolint:contextcheck // the member outlives Start's context
	m.log.WithField("url", m.url).Info("member: joined the group")
	return m, nil
}

func (cfg Config) check() error {
	switch {
	case cfg.Group == "" || cfg.ID == "":
		return errors.New("member: Group and ID are required")
	case cfg.Views == nil:
		return errors.New("member: Views is required")
	case cfg.Handler == nil:
		return errors.New("member: Handler is required")
	case len(cfg.Channels) == 0:
		return errors.New("member: at least one channel provider is required")
	}
	seen := map[string]bool{}
	for _, c := range cfg.Channels {
		if seen[c.Provider.Name()] {
			return fmt.Errorf("member: channel provider %s is given twice", c.Provider.Name())
		}
		seen[c.Provider.Name()] = true
	}
	return nil
}

// advertised is a channel listener whose address, as the terminal element
// hands it to clients, is another one.
type advertised struct {
	rdma.Listener
	addr string
}

func (a advertised) Addr() string { return a.addr }

// listenURL is the URL clients reach a listener at (with the port a tcp://
// URL with port 0 got).
func listenURL(raw string, lis net.Listener) string {
	if a, ok := lis.Addr().(*net.TCPAddr); ok {
		return "tcp://" + a.String()
	}
	return raw
}

// stay joins the group again whenever the membership is lost, until Stop.
func (m *Member) stay(ctx context.Context, self view.Member, ms view.Membership) {
	defer m.wg.Done()
	delay := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-ms.Done():
		}
		m.log.WithError(ms.Err()).Warn("member: membership lost; joining again")
		for {
			next, err := m.cfg.Views.Join(ctx, m.cfg.Group, self)
			if err == nil {
				m.mu.Lock()
				m.current, ms = next, next
				m.mu.Unlock()
				m.log.Info("member: joined the group again")
				delay = 50 * time.Millisecond
				break
			}
			m.log.WithError(err).Debug("member: join failed")
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 2*time.Second)
		}
	}
}

// URL returns the URL of the member's endpoint chain.
func (m *Member) URL() string { return m.url }

// Endpoint returns the member's endpoint chain (for tests and metrics).
func (m *Member) Endpoint() networkservice.NetworkServiceServer { return m.endpoint }

// Connections returns how many connections the member holds.
func (m *Member) Connections() int {
	return m.endpoint.(chain.ConnectionCounter).Connections()
}

// Stop leaves the group, closes every connection and channel, and stops
// serving (waiting for calls in progress until ctx ends).
func (m *Member) Stop(ctx context.Context) error {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return nil
	}
	m.stopped = true
	ms := m.current
	m.mu.Unlock()
	m.stop()
	m.wg.Wait()
	err := ms.Leave(ctx)
	if _, cerr := chain.CloseAll(ctx, m.endpoint); cerr != nil && err == nil {
		err = cerr
	}
	stopped := make(chan struct{})
	go func() {
		m.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		m.grpc.Stop()
		<-stopped
	}
	<-m.served
	m.closeListeners()
	return err
}

// Abort stops the member as a crash would: it does not leave the group
// (its membership connection just breaks), connections are not closed and
// channels break. Tests use it; a program calls Stop.
func (m *Member) Abort() {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.stopped = true
	m.mu.Unlock()
	m.stop()
	m.wg.Wait()
	m.grpc.Stop()
	<-m.served
	m.closeListeners()
	_, _ = chain.CloseAll(context.Background(), m.endpoint) // local state only: the channels are gone
}

func (m *Member) closeListeners() {
	for _, l := range m.listeners {
		_ = l.Close()
	}
}
