package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tether-mesh/tether/internal/grpcopts"
	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/heal"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/shm"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
	"github.com/tether-mesh/tether/pkg/refresh"
	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/updatepath"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/membership"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

// ErrClosed is returned by a closed Client or Conn.
var ErrClosed = errors.New("client: closed")

// Client is a process's link to its forwarder.
type Client struct {
	opts  options
	cc    *grpc.ClientConn
	chain networkservice.NetworkServiceClient
	views *membership.Client

	mu     sync.Mutex
	conns  map[string]*Conn
	closed bool
}

// Dial returns a client of the forwarder at forwarderURL (unix:///path or
// tcp://host:port). The gRPC connection is made lazily.
func Dial(forwarderURL string, opts ...Option) (*Client, error) {
	o := options{name: "client-" + uuid.NewString()[:8], backoff: heal.DefaultBackoff, log: logrus.NewEntry(logrus.StandardLogger())}
	for _, opt := range opts {
		opt(&o)
	}
	if len(o.providers) == 0 {
		o.providers = []rdma.Provider{shm.New(), tcp.New()}
	}
	u, err := url.Parse(forwarderURL)
	if err != nil {
		return nil, fmt.Errorf("client: forwarder URL %q: %w", forwarderURL, err)
	}
	target, err := sockurl.GRPCTarget(u)
	if err != nil {
		return nil, fmt.Errorf("client: forwarder %w", err)
	}
	cc, err := grpc.NewClient(target, append(append(grpcopts.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials())), o.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", forwarderURL, err)
	}
	c := &Client{opts: o, cc: cc, views: membership.NewClient(cc), conns: map[string]*Conn{}}
	var pathOpts []updatepath.Option
	if o.lifetime > 0 {
		pathOpts = append(pathOpts, updatepath.WithLifetime(o.lifetime))
	}
	c.chain = chain.NewClient(
		chain.ClientFuncs{RequestFunc: c.record},
		heal.NewClient(heal.WithMonitor(networkservice.NewMonitorConnectionClient(cc)), heal.WithBackoff(o.backoff), heal.WithObserver(c.observe), heal.WithLogger(o.log)),
		refresh.NewClient(),
		updatepath.NewClient(o.name, pathOpts...),
		rdma.NewClient(rdma.WithProviders(o.providers...), rdma.WithBind(c.bind), rdma.WithClientLogger(o.log)),
		chain.ClientTail(networkservice.NewNetworkServiceClient(cc)),
	)
	return c, nil
}

// Name returns the client's path segment name.
func (c *Client) Name() string { return c.opts.name }

// View returns the current view of group, as the forwarder's membership
// service has it.
func (c *Client) View(ctx context.Context, group string) (view.View, error) {
	return c.views.View(ctx, group)
}

// Connect opens a connection to a member of group and its channel.
func (c *Client) Connect(ctx context.Context, group string, opts ...ConnectOption) (*Conn, error) {
	var co connectOptions
	for _, o := range opts {
		o(&co)
	}
	labels := maps.Clone(co.labels)
	if len(co.selector) > 0 {
		if labels == nil {
			labels = map[string]string{}
		}
		labels[viewrefresh.SelectorLabel] = selectorText(co.selector)
	}
	cn := &Conn{c: c, id: uuid.NewString()}
	cn.caller = call.NewCaller(c.opts.log, call.WithExplain(cn.explain))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.conns[cn.id] = cn
	c.mu.Unlock()
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: cn.id, NetworkService: group, Labels: labels}}
	if _, err := c.chain.Request(ctx, req); err != nil {
		c.forget(cn)
		cn.caller.Close()
		return nil, err
	}
	return cn, nil
}

func selectorText(sel map[string]string) string {
	parts := make([]string, 0, len(sel))
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

// record keeps the connection as the forwarder last returned it.
func (c *Client) record(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	resp, err := next.Request(ctx, req, opts...)
	if err == nil {
		if cn := c.lookup(resp.GetId()); cn != nil {
			cn.setConnection(resp.Clone())
		}
	}
	return resp, err
}

// observe keeps each connection's health and tells the application.
func (c *Client) observe(r heal.Report) {
	if cn := c.lookup(r.ConnID); cn != nil {
		cn.mu.Lock()
		switch r.Kind {
		case heal.Started:
			cn.stats.Heals++
			cn.down, cn.downErr = true, fmt.Errorf("%v", r.Cause)
		case heal.Failed:
			cn.downErr = r.Err
		case heal.Succeeded:
			cn.down, cn.downErr = false, nil
		}
		cn.mu.Unlock()
	}
	if c.opts.observer != nil {
		c.opts.observer(r)
	}
}

// bind gives a connection's new channel to its caller.
func (c *Client) bind(connID string, ch, old rdma.Channel, replayed []rdma.Message) {
	if cn := c.lookup(connID); cn != nil {
		cn.mu.Lock()
		cn.stats.Binds++
		cn.stats.Provider = ch.Provider()
		if c.opts.metrics != nil {
			// The caller knows the channels as it was given them.
			ch, old = c.opts.metrics.Wrap(ch), cn.counted
			cn.counted = ch
		}
		cn.mu.Unlock()
		cn.caller.Bind(ch, old, replayed)
	}
}

func (c *Client) lookup(id string) *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[id]
}

func (c *Client) forget(cn *Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.conns, cn.id)
}

// Close closes every connection and the link to the forwarder.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conns := slices.Collect(maps.Values(c.conns))
	c.mu.Unlock()
	var first error
	for _, cn := range conns {
		if err := cn.Close(context.Background()); err != nil && first == nil {
			first = err
		}
	}
	if err := c.cc.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

// Conn is a connection to one member of a group.
type Conn struct {
	c      *Client
	id     string
	caller *call.Caller

	mu      sync.Mutex
	conn    *networkservice.Connection
	closed  bool
	stats   Stats
	down    bool         // a heal is under way
	downErr error        // why, or its last attempt's error
	counted rdma.Channel // the channel as the caller has it, with metrics
}

// Stats describes a connection's history.
type Stats struct {
	// Binds counts the channels the connection had: 1 until it heals or
	// moves to another member.
	Binds int
	// Heals counts the heals that started.
	Heals int
	// Provider is the channel provider in use.
	Provider string
}

// Stats returns the connection's counters.
func (cn *Conn) Stats() Stats {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.stats
}

func (cn *Conn) setConnection(conn *networkservice.Connection) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	cn.conn = conn
}

// ID returns the connection's ID.
func (cn *Conn) ID() string { return cn.id }

// Member returns the ID of the member the connection is bound to now.
func (cn *Conn) Member() string {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.conn.GetNetworkServiceEndpointName()
}

// ViewID returns the ID of the view the member was chosen in.
func (cn *Conn) ViewID() string {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.conn.GetContext().GetExtraContext()[viewrefresh.ViewIDKey]
}

// Call sends payload to the member's handler and waits for its answer,
// until ctx ends. A call in flight when the connection heals is sent to the
// new member, marked as a retry (see package call).
func (cn *Conn) Call(ctx context.Context, payload []byte) ([]byte, error) {
	return cn.caller.Call(ctx, nil, payload)
}

// CallWithHeader is Call with an application header of at most
// call.MaxHeaderSize bytes.
func (cn *Conn) CallWithHeader(ctx context.Context, header, payload []byte) ([]byte, error) {
	return cn.caller.Call(ctx, header, payload)
}

// AppendCall is CallWithHeader appending the answer to dst (header may be
// nil): it returns the extended buffer, or dst and the error. Reusing one
// buffer, calls allocate nothing.
func (cn *Conn) AppendCall(ctx context.Context, dst, header, payload []byte) ([]byte, error) {
	return cn.caller.AppendCall(ctx, dst, header, payload)
}

// explain adds, to a call that ran out of time while the connection was
// down, why it was down: a clear error rather than a bare deadline. The
// caller passes every call's error through it (call.WithExplain).
func (cn *Conn) explain(err error) error {
	if err == nil || (!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)) {
		return err
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if !cn.down {
		return err
	}
	if cn.downErr == nil {
		return fmt.Errorf("client: connection %s to group %s is down and healing: %w", cn.id, cn.conn.GetNetworkService(), err)
	}
	return fmt.Errorf("client: connection %s to group %s is down and healing (%w): %w", cn.id, cn.conn.GetNetworkService(), cn.downErr, err)
}

// Send sends a one-way message (see call.Caller.Send); payload must not be
// changed until Flush returns.
func (cn *Conn) Send(ctx context.Context, header, payload []byte) error {
	return cn.caller.Send(ctx, header, payload)
}

// Flush waits until every message sent is acknowledged by the member.
func (cn *Conn) Flush(ctx context.Context) error {
	return cn.caller.Flush(ctx)
}

// Close closes the connection: its channel, and its state at the forwarder
// and the member.
func (cn *Conn) Close(ctx context.Context) error {
	cn.mu.Lock()
	if cn.closed {
		cn.mu.Unlock()
		return nil
	}
	cn.closed = true
	conn := cn.conn
	cn.mu.Unlock()
	if conn == nil {
		conn = &networkservice.Connection{Id: cn.id}
	}
	_, err := cn.c.chain.Close(ctx, conn)
	cn.caller.Close()
	cn.c.forget(cn)
	return err
}
