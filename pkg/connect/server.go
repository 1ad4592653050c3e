package connect

import (
	"context"
	"net/url"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/internal/grpcopts"
	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/clienturl"
	"github.com/tether-mesh/tether/pkg/refcount"
	"github.com/tether-mesh/tether/pkg/sockurl"
)

// retryUnavailable retries, once and soon, a Request that failed with
// Unavailable (the far end's transport broke under it, as when a member
// restarts on the same socket): a Request for a known connection ID is a
// refresh, idempotent. Once only: a far end that died must not hold up a
// heal, which goes to another member.
// A Close is not retried: it is best effort, and a far end that is gone
// must not hold up the connection's next event.
const retryUnavailable = `{"methodConfig": [{
	"name": [{"service": "networkservice.NetworkService", "method": "Request"}],
	"retryPolicy": {
		"maxAttempts": 2,
		"initialBackoff": "0.005s",
		"maxBackoff": "0.01s",
		"backoffMultiplier": 2,
		"retryableStatusCodes": ["UNAVAILABLE"]
	}
}]}`

// urlClient is what all connections to one URL share.
type urlClient struct {
	url    string
	cc     *grpc.ClientConn
	client networkservice.NetworkServiceClient
	ctx    context.Context // ends with the shared connection
	cancel context.CancelFunc
}

// connState is a connection's client, kept in its metadata.
type connState struct {
	ref    *refcount.Ref[string, *urlClient]
	cancel func() // ref.Force, bound once
}

func (s *connState) client() *urlClient { return s.ref.Value() }

var stateKey = chain.NewKey[*connState]("connect")

type server struct {
	opts    options
	clients *refcount.Map[string, *urlClient]
	leaving sync.WaitGroup // closes at the URLs connections moved away from
}

// ClientCounter is implemented by the element NewServer returns.
type ClientCounter interface {
	// ClientConns returns how many gRPC connections the element holds open,
	// one per URL in use.
	ClientConns() int
}

// HangUpper is implemented by the element NewServer returns.
type HangUpper interface {
	// HangUp closes every gRPC connection at once, without closing the
	// connections that use them at the far end (a process dying does the
	// same). Later Requests dial again.
	HangUp()
}

// NewServer returns the connect element.
func NewServer(opts ...Option) chain.ServerElement {
	s := &server{opts: options{
		factory: func(_ context.Context, cc grpc.ClientConnInterface) networkservice.NetworkServiceClient {
			return networkservice.NewNetworkServiceClient(cc)
		},
		dialTimeout: DefaultDialTimeout,
		log:         logrus.NewEntry(logrus.StandardLogger()),
	}}
	for _, o := range opts {
		o(&s.opts)
	}
	s.clients = refcount.NewMap(s.dial, s.hangUp)
	return s
}

func (s *server) ClientConns() int {
	return s.clients.Len()
}

func (s *server) HangUp() {
	for _, key := range s.clients.Keys() {
		s.clients.Force(key)
	}
}

// dial makes the shared client of one URL. grpc.NewClient does not connect:
// a Request waits for the connection (ready).
func (s *server) dial(rawURL string) (*urlClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "connect: next hop URL %q: %v", rawURL, err)
	}
	t, err := sockurl.GRPCTarget(u)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "connect: next hop %v", err)
	}
	opts := append(append(grpcopts.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Reconnect promptly: a member restarted on the same socket is
		// reachable by the next Request, and ready() resets the backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: s.opts.dialTimeout,
		}),
		grpc.WithDefaultServiceConfig(retryUnavailable),
	), s.opts.dialOptions...)
	cc, err := grpc.NewClient(t, opts...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "connect: next hop %s: %v", rawURL, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &urlClient{url: rawURL, cc: cc, client: s.opts.factory(ctx, cc), ctx: ctx, cancel: cancel}, nil
}

// hangUp ends a URL's shared client: its context, then its connection.
func (s *server) hangUp(_ string, c *urlClient) {
	c.cancel()
	if err := c.cc.Close(); err != nil {
		s.opts.log.WithError(err).WithField("url", c.url).Debug("connect: closing the client connection")
	}
}

// ready waits until the shared connection is up, for at most the dial
// timeout. A far end that refuses the connection fails the Request at once
// rather than at the timeout: heal moves on to another member sooner.
func (s *server) ready(ctx context.Context, c *urlClient) error {
	state := c.cc.GetState()
	if state == connectivity.Ready {
		return nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, s.opts.dialTimeout)
	defer cancel()
	c.cc.Connect()
	tried := false // a state change was seen since Connect: an attempt ran
	for ; state != connectivity.Ready; state = c.cc.GetState() {
		switch state {
		case connectivity.Shutdown:
			return status.Errorf(codes.Unavailable, "connect %s: connection closed", c.url)
		case connectivity.TransientFailure:
			if tried {
				return status.Errorf(codes.Unavailable, "connect %s: the next hop refused the connection", c.url)
			}
		}
		tried = true
		if !c.cc.WaitForStateChange(waitCtx, state) {
			if err := ctx.Err(); err != nil {
				return status.FromContextError(err).Err()
			}
			return status.Errorf(codes.Unavailable, "connect %s: not reachable within %v (%v)", c.url, s.opts.dialTimeout, state)
		}
	}
	return nil
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	u := clienturl.ClientURL(ctx)
	if u == nil {
		return nil, status.Error(codes.Internal, "connect: no next hop URL: put clienturl or view refresh before connect in the chain")
	}
	key := u.String()

	old, _ := stateKey.Load(ctx)
	st, fresh := old, false
	if old == nil || old.client().url != key || !old.ref.Alive() {
		var err error
		if st, err = s.acquire(key); err != nil {
			return nil, err
		}
		fresh = true
	}
	if st.client().cc.GetState() == connectivity.TransientFailure {
		// The shared connection failed and gRPC keeps it failing while it
		// retries in the background: start over with a fresh one, whose
		// first attempt tells at once whether the far end is there.
		st.ref.Force()
		var err error
		if st, err = s.acquire(key); err != nil {
			return nil, err
		}
		fresh = true
	}
	if err := s.ready(ctx, st.client()); err != nil {
		if fresh {
			st.ref.Release()
		}
		return nil, err
	}
	var oldConn *networkservice.Connection
	if fresh && old != nil && old.ref.Alive() {
		oldConn = req.GetConnection().Clone() // what the old URL knows of this connection
	}
	conn, err := s.request(ctx, req, next, st, fresh)
	if err != nil {
		return nil, err // the connection keeps its old client, if it had one
	}
	if fresh {
		stateKey.Store(ctx, st)
		if old != nil { // make before break: the new client connection is up
			s.leave(ctx, old, oldConn)
		}
	}
	return conn, nil
}

func (s *server) acquire(key string) (*connState, error) {
	ref, err := s.clients.Acquire(key)
	if err != nil {
		return nil, err
	}
	return &connState{ref: ref, cancel: ref.Force}, nil
}

// request sends req through st's client, then on down the server chain.
// fresh says st was acquired for this request: a failure then releases it.
func (s *server) request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer, st *connState, fresh bool) (*networkservice.Connection, error) {
	c := st.client()
	conn, err := c.client.Request(withCancel(ctx, st.cancel), req, s.opts.callOptions...)
	if err != nil {
		if fresh {
			st.ref.Release()
		}
		return nil, err
	}
	req.Connection = conn
	resp, err := next.Request(ctx, req)
	if err != nil {
		if fresh {
			s.closeClient(ctx, st, conn)
			st.ref.Release()
		}
		return nil, err
	}
	return resp, nil
}

// leave closes the connection at the URL it moved away from, off the
// Request's path: the far end is often gone (the connection moved because
// its member failed), and the Request must not wait for it.
func (s *server) leave(ctx context.Context, old *connState, conn *networkservice.Connection) {
	if conn == nil {
		old.ref.Release()
		return
	}
	s.leaving.Add(1)
	go func() {
		defer s.leaving.Done()
		s.closeClient(context.WithoutCancel(ctx), old, conn)
		old.ref.Release()
	}()
}

// closeClient closes conn through st's client, best effort: the connection
// is gone here whatever the far end says.
func (s *server) closeClient(ctx context.Context, st *connState, conn *networkservice.Connection) {
	c := st.client()
	if !st.ref.Alive() || c.cc.GetState() == connectivity.TransientFailure {
		return // the far end is gone: it has nothing to close
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.dialTimeout)
	defer cancel()
	if _, err := c.client.Close(withCancel(ctx, st.cancel), conn, s.opts.callOptions...); err != nil {
		s.opts.log.WithError(err).WithFields(logrus.Fields{"conn_id": conn.GetId(), "url": c.url}).Debug("connect: the next hop did not close the connection")
	}
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if st, ok := stateKey.LoadAndDelete(ctx); ok {
		s.closeClient(ctx, st, conn)
		st.ref.Release()
	}
	return next.Close(ctx, conn)
}
