package membership

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/internal/feed"
	"github.com/tether-mesh/tether/pkg/view/internal/wire"
	pb "github.com/tether-mesh/tether/pkg/view/membershippb"
)

// MaxViewBytes bounds a view message the client accepts (a gRPC receive
// limit): room for DefaultLimits' MaxMembers members with some data each.
const MaxViewBytes = 64 << 20

// Client is a view.Provider backed by the membership service.
type Client struct {
	api  pb.MembershipClient
	cc   *grpc.ClientConn // owned, when Dial made it
	opts clientOptions

	mu     sync.Mutex
	closed bool
	// streams cancels every stream of the client: Close ends them all.
	streams map[*context.CancelFunc]struct{}
	wg      sync.WaitGroup
}

var errClientClosed = status.Error(codes.Unavailable, "view: the membership client is closed")

// stream returns the context of a stream that ends with parent's values but
// not its cancellation: with cancel, or when the client closes.
func (c *Client) stream(parent context.Context) (context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cancel()
		return nil, nil, errClientClosed
	}
	key := &cancel
	c.streams[key] = struct{}{}
	return ctx, func() {
		cancel()
		c.mu.Lock()
		delete(c.streams, key)
		c.mu.Unlock()
	}, nil
}

// spawn runs each function on a goroutine Close waits for, unless the client
// is closed.
func (c *Client) spawn(fns ...func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(len(fns))
	for _, f := range fns {
		go func() {
			defer c.wg.Done()
			f()
		}()
	}
	return true
}

type clientOptions struct {
	heartbeat   time.Duration
	limits      view.Limits
	log         *logrus.Entry
	dialOptions []grpc.DialOption
}

// ClientOption configures Dial and NewClient.
type ClientOption func(*clientOptions)

// WithHeartbeatInterval makes members joined through the client send
// heartbeats every d instead of the interval the server asks for. It is for
// tests and unusual deployments: a member that heartbeats less often than the
// server's lease time is expired.
func WithHeartbeatInterval(d time.Duration) ClientOption {
	return func(o *clientOptions) { o.heartbeat = d }
}

// WithClientLimits sets the limits the client checks what it sends and
// receives against.
func WithClientLimits(l view.Limits) ClientOption {
	return func(o *clientOptions) { o.limits = l }
}

// WithClientLogger sets the client's logger.
func WithClientLogger(log *logrus.Entry) ClientOption {
	return func(o *clientOptions) { o.log = log }
}

// WithDialOptions adds options to the gRPC connection Dial makes (the
// default is an insecure connection, for a unix socket or loopback).
func WithDialOptions(opts ...grpc.DialOption) ClientOption {
	return func(o *clientOptions) { o.dialOptions = append(o.dialOptions, opts...) }
}

func newOptions(opts []ClientOption) clientOptions {
	o := clientOptions{limits: view.DefaultLimits, log: logrus.NewEntry(logrus.StandardLogger())}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Dial returns a client of the membership service at target, a URL that
// sockurl reads ("unix:///run/tether/forwarder.sock",
// "tcp://127.0.0.1:5002"). The connection is made lazily and remade when it
// breaks. Close the client to release it.
func Dial(target string, opts ...ClientOption) (*Client, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("membership dial %q: %w", target, err)
	}
	grpcTarget, err := sockurl.GRPCTarget(u)
	if err != nil {
		return nil, fmt.Errorf("membership dial: %w", err)
	}
	o := newOptions(opts)
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxViewBytes)),
	}, o.dialOptions...)
	cc, err := grpc.NewClient(grpcTarget, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("membership dial %s: %w", target, err)
	}
	c := newClient(pb.NewMembershipClient(cc), o)
	c.cc = cc
	return c, nil
}

// NewClient returns a client over a connection the caller owns; closing the
// client does not close cc.
func NewClient(cc grpc.ClientConnInterface, opts ...ClientOption) *Client {
	return newClient(pb.NewMembershipClient(cc), newOptions(opts))
}

func newClient(api pb.MembershipClient, o clientOptions) *Client {
	return &Client{api: api, opts: o, streams: map[*context.CancelFunc]struct{}{}}
}

// Close ends every membership (their streams break, so the server removes
// the members at once) and every watch of the client, waits for them, and
// closes the connection Dial made.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	for cancel := range c.streams {
		(*cancel)()
	}
	clear(c.streams)
	c.mu.Unlock()
	c.wg.Wait()
	if c.cc != nil {
		return c.cc.Close()
	}
	return nil
}

// View implements view.Provider.
func (c *Client) View(ctx context.Context, group string) (view.View, error) {
	if err := c.opts.limits.CheckGroup(group); err != nil {
		return view.View{}, err
	}
	resp, err := c.api.GetView(ctx, &pb.GetViewRequest{Group: group})
	if err != nil {
		return view.View{}, err
	}
	v, err := wire.ViewFromProto(resp, c.opts.limits)
	if err != nil {
		return view.View{}, status.Errorf(codes.Internal, "the membership service sent a malformed view: %v", err)
	}
	if v.Group != group {
		return view.View{}, status.Errorf(codes.Internal, "the membership service sent a view of group %q for %q", v.Group, group)
	}
	return v, nil
}

// Stats implements view.Provider.
func (c *Client) Stats(ctx context.Context, group string) (view.Stats, error) {
	if err := c.opts.limits.CheckGroup(group); err != nil {
		return view.Stats{}, err
	}
	st, err := c.api.GetStats(ctx, &pb.GetStatsRequest{Group: group})
	if err != nil {
		return view.Stats{}, err
	}
	return view.Stats{Views: st.GetViews(), Joins: st.GetJoins(), Leaves: st.GetLeaves(), Expiries: st.GetExpiries(), Failures: st.GetFailures()}, nil
}

// Watch implements view.Provider. The watch ends with an error when its
// stream breaks (codes.Unavailable when the server went away): resume it with
// the last view received.
func (c *Client) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	if err := c.opts.limits.CheckGroup(group); err != nil {
		return nil, err
	}
	id, refs := wire.AfterToProto(after)
	// The stream ends with ctx (the feed's context), Close of the watch, or
	// Close of the client.
	sctx, cancel, err := c.stream(ctx)
	if err != nil {
		return nil, err
	}
	stream, err := c.api.Watch(sctx, &pb.WatchRequest{Group: group, After: id, AfterMembers: refs})
	if err != nil {
		cancel()
		return nil, err
	}
	f := feed.New(ctx, after, func(*feed.Feed) { cancel() })
	if !c.spawn(func() {
		defer f.Close()
		for {
			resp, err := stream.Recv()
			if err != nil {
				f.Fail(err)
				return
			}
			v, err := wire.ViewFromProto(resp, c.opts.limits)
			if err == nil && v.Group != group {
				err = fmt.Errorf("a view of group %q", v.Group)
			}
			if err != nil {
				f.Fail(status.Errorf(codes.Internal, "the membership service sent a malformed view: %v", err))
				return
			}
			f.Publish(&v)
		}
	}) {
		f.Close()
		return nil, errClientClosed
	}
	return f, nil
}

// maxHeartbeatInterval bounds the interval a client accepts from a server.
const maxHeartbeatInterval = time.Hour

// Join implements view.Provider: it opens a membership session that sends
// heartbeats until Leave, until the client closes, or until the session
// breaks. A broken session, whichever side broke it (the server restarted,
// the member was expired), ends the membership: Done closes, Err says why
// (codes.Unavailable, codes.DeadlineExceeded), and the member is out of the
// group; a member that wants to stay joins again, as a new incarnation.
func (c *Client) Join(ctx context.Context, group string, m view.Member) (view.Membership, error) {
	if err := c.opts.limits.CheckGroup(group); err != nil {
		return nil, err
	}
	if err := c.opts.limits.CheckMember(m); err != nil {
		return nil, err
	}
	// The session outlives ctx, which bounds the join only: until the
	// server answered.
	sctx, cancel, err := c.stream(ctx)
	if err != nil {
		return nil, err
	}
	stopJoin := context.AfterFunc(ctx, cancel)
	fail := func(err error) (view.Membership, error) {
		stopJoin()
		cancel()
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, err
	}
	stream, err := c.api.Join(sctx)
	if err != nil {
		return fail(err)
	}
	if err := stream.Send(&pb.JoinRequest{Kind: &pb.JoinRequest_Join_{Join: &pb.JoinRequest_Join{Group: group, Member: wire.MemberToProto(m)}}}); err != nil {
		// Send reports io.EOF when the server ended the stream; the reason
		// comes with Recv.
		_, err = stream.Recv()
		return fail(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return fail(err)
	}
	joined := resp.GetJoined()
	if joined == nil {
		return fail(status.Error(codes.Internal, "the membership service answered a join with something else"))
	}
	member, err := wire.MemberFromProto(joined.GetMember(), c.opts.limits)
	if err == nil && member.ID != m.ID {
		err = fmt.Errorf("member %q joined as %q", m.ID, member.ID)
	}
	if err != nil {
		return fail(status.Errorf(codes.Internal, "the membership service answered a join with a malformed member: %v", err))
	}
	if !stopJoin() {
		return fail(status.FromContextError(ctx.Err()).Err())
	}
	interval := c.opts.heartbeat
	if interval <= 0 {
		interval = time.Duration(joined.GetHeartbeatIntervalNs())
		if interval <= 0 || interval > maxHeartbeatInterval {
			return fail(status.Errorf(codes.Internal, "the membership service asked for heartbeats every %v", interval))
		}
	}
	ms := &clientMembership{
		group:    group,
		member:   member,
		stream:   stream,
		cancel:   cancel,
		done:     make(chan struct{}),
		left:     make(chan struct{}),
		interval: interval,
		log:      c.opts.log.WithFields(logrus.Fields{"group": group, "member": member.ID}),
	}
	if !c.spawn(ms.receive, ms.heartbeat) {
		cancel()
		return nil, errClientClosed
	}
	return ms, nil
}

// clientMembership is a membership session of a Client.
type clientMembership struct {
	group    string
	member   view.Member
	stream   grpc.BidiStreamingClient[pb.JoinRequest, pb.JoinResponse]
	cancel   context.CancelFunc
	interval time.Duration
	log      *logrus.Entry

	sendMu sync.Mutex // one Send at a time: heartbeats and the leave

	mu      sync.Mutex
	leaving bool
	err     error
	done    chan struct{}
	// left is closed when the server confirmed the leave.
	left chan struct{}
}

func (m *clientMembership) Group() string         { return m.group }
func (m *clientMembership) Member() view.Member   { return m.member }
func (m *clientMembership) Done() <-chan struct{} { return m.done }

func (m *clientMembership) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// end records why the membership ended, once, and breaks the stream.
func (m *clientMembership) end(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return
	}
	m.err = err
	close(m.done)
	m.cancel()
}

// receive waits for the session's end: the server's confirmation of a leave,
// or the stream breaking.
func (m *clientMembership) receive() {
	for {
		resp, err := m.stream.Recv()
		if err != nil {
			m.mu.Lock()
			leaving := m.leaving
			m.mu.Unlock()
			if leaving {
				m.end(view.ErrLeft)
				return
			}
			st := status.Convert(err)
			if st.Code() == codes.Canceled || st.Code() == codes.OK {
				st = status.New(codes.Unavailable, "the membership session ended: "+st.Message())
			}
			m.log.WithError(st.Err()).Info("membership lost")
			m.end(st.Err())
			return
		}
		if resp.GetLeft() != nil {
			close(m.left)
			m.end(view.ErrLeft)
			return
		}
	}
}

func (m *clientMembership) heartbeat() {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	hb := &pb.JoinRequest{Kind: &pb.JoinRequest_Heartbeat_{Heartbeat: &pb.JoinRequest_Heartbeat{}}}
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			if !m.send(hb) {
				return // receive sees why
			}
		}
	}
}

// Leave implements view.Membership. When ctx ends before the server
// confirmed, the stream is broken instead, which removes the member too.
func (m *clientMembership) Leave(ctx context.Context) error {
	// When the membership has ended, or another Leave runs, or the stream
	// broke (the server removes the member for that), there is nothing to
	// confirm.
	if !m.startLeaving() || !m.send(&pb.JoinRequest{Kind: &pb.JoinRequest_Leave_{Leave: &pb.JoinRequest_Leave{}}}) {
		<-m.done
		return nil
	}
	var err error
	select {
	case <-m.left:
	case <-m.done:
	case <-ctx.Done():
		err = status.FromContextError(ctx.Err()).Err()
	}
	m.end(view.ErrLeft)
	return err
}

// startLeaving marks the membership as leaving; it reports false when it
// has ended or is leaving already.
func (m *clientMembership) startLeaving() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil || m.leaving {
		return false
	}
	m.leaving = true
	return true
}

// send sends req on the session; it reports false when the stream broke.
func (m *clientMembership) send(req *pb.JoinRequest) bool {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	return m.stream.Send(req) == nil
}
