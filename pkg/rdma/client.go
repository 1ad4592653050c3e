package rdma

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// DefaultDialTimeout bounds how long the client element waits to open a
// channel.
const DefaultDialTimeout = 5 * time.Second

// BindFunc learns that a connection's channel changed: ch is the new one,
// old the one it replaces (nil on the first bind), being closed; replayed
// are old's unacknowledged messages as they were sent again on ch, marked
// FlagRetry (read them; they may be in flight on ch). It is told what was
// replayed rather than asking old: a message old's peer takes after the
// replay would no longer be in old.Unacked. It runs inside the
// connection's Request event and must not block.
type BindFunc func(connID string, ch, old Channel, replayed []Message)

// ClientOption configures NewClient.
type ClientOption func(*clientOptions)

type clientOptions struct {
	providers   []Provider
	dialTimeout time.Duration
	bind        BindFunc
	log         *logrus.Entry
}

// WithProviders sets the providers the client can use, in the order it
// prefers them.
func WithProviders(providers ...Provider) ClientOption {
	return func(o *clientOptions) { o.providers = append(o.providers, providers...) }
}

// WithDialTimeout bounds opening a channel (default DefaultDialTimeout).
func WithDialTimeout(d time.Duration) ClientOption {
	return func(o *clientOptions) { o.dialTimeout = d }
}

// WithBind sets the function told of every new channel.
func WithBind(f BindFunc) ClientOption {
	return func(o *clientOptions) { o.bind = f }
}

// WithClientLogger sets the logger.
func WithClientLogger(log *logrus.Entry) ClientOption {
	return func(o *clientOptions) { o.log = log }
}

// bound is a connection's channel at the client element.
type bound struct {
	b  Binding
	ch Channel
}

var boundKey = chain.NewKey[*bound]("rdma.channel")

type client struct {
	opts      clientOptions
	providers map[string]Provider
}

// NewClient returns the client element: it offers its providers when the
// request has no mechanism preferences, opens the channel the endpoint's
// answer describes, keeps it across refreshes that answer the same binding,
// and when an answer names another binding (another member), opens the new
// channel and sends the old channel's unacknowledged messages again on it,
// marked FlagRetry. When it cannot open the channel (a shm peer running as
// another user, say), it requests again without that provider, as long as
// the request offers others. Close closes the channel.
func NewClient(opts ...ClientOption) chain.ClientElement {
	c := &client{opts: clientOptions{dialTimeout: DefaultDialTimeout, log: logrus.NewEntry(logrus.StandardLogger())}, providers: map[string]Provider{}}
	for _, o := range opts {
		o(&c.opts)
	}
	for _, p := range c.opts.providers {
		c.providers[p.Name()] = p
	}
	return c
}

// ChannelOf returns the channel of the connection whose event runs in ctx.
func ChannelOf(ctx context.Context) (Channel, bool) {
	if b, ok := boundKey.Load(ctx); ok {
		return b.ch, true
	}
	return nil, false
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	if len(req.GetMechanismPreferences()) == 0 {
		for _, p := range c.opts.providers {
			req.MechanismPreferences = append(req.MechanismPreferences, Preference(p.Name()))
		}
	}
	old, _ := boundKey.Load(ctx)
	var (
		tried  []string // the providers that could not be opened
		failed []string // and why, for the error
	)
	for {
		resp, err := next.Request(ctx, req, opts...)
		if err != nil {
			return nil, err
		}
		b, err := ParseBinding(resp.GetMechanism())
		if err == nil {
			if _, ok := c.providers[b.Provider]; !ok {
				err = fmt.Errorf("%w: provider %q was not offered", ErrInvalidArgument, b.Provider)
			}
		}
		if err != nil {
			c.abandon(ctx, old, resp, next, opts)
			return nil, status.Errorf(codes.FailedPrecondition, "rdma: the endpoint answered with an unusable mechanism: %v", err)
		}
		if old != nil && old.b == b && old.ch.Err() == nil {
			return resp, nil // the same binding, still working
		}
		ch, replayed, err := c.open(ctx, b, old)
		if err != nil {
			failed = append(failed, fmt.Sprintf("open the %s channel to %s: %v", b.Provider, b.Address, err))
			// The endpoint binds anew when a refresh no longer offers
			// its provider: try the next one the request offers (unless
			// the endpoint answered one it was told to leave).
			rest := withoutProvider(req.GetMechanismPreferences(), b.Provider)
			if len(rest) > 0 && !slices.Contains(tried, b.Provider) && ctx.Err() == nil {
				tried = append(tried, b.Provider)
				c.opts.log.WithFields(logrus.Fields{"conn_id": resp.GetId(), "provider": b.Provider}).WithError(err).
					Info("rdma: could not open the channel; offering the other providers")
				req.MechanismPreferences = rest
				continue
			}
			c.abandon(ctx, old, resp, next, opts)
			return nil, status.Errorf(codes.Unavailable, "rdma: %s", strings.Join(failed, "; "))
		}
		c.keep(ctx, resp, b, ch, old, replayed)
		return resp, nil
	}
}

// withoutProvider returns the RDMA preferences of prefs other than those of
// provider, keeping the others' order; the preferences of other mechanism
// types are dropped, since this element serves only RDMA.
func withoutProvider(prefs []*networkservice.Mechanism, provider string) []*networkservice.Mechanism {
	var rest []*networkservice.Mechanism
	for _, m := range prefs {
		if m.GetType() == MechanismType && m.GetParameters()[ParamProvider] != provider {
			rest = append(rest, m)
		}
	}
	return rest
}

// keep records ch, opened for binding b in place of old, and tells the
// bind function.
func (c *client) keep(ctx context.Context, resp *networkservice.Connection, b Binding, ch Channel, old *bound, replayed []Message) {
	boundKey.Store(ctx, &bound{b: b, ch: ch})
	var oldCh Channel
	if old != nil {
		oldCh = old.ch
	}
	if c.opts.bind != nil {
		c.opts.bind(resp.GetId(), ch, oldCh, replayed)
	}
}

// open dials the binding's channel and sends the old channel's
// unacknowledged messages on it, which it returns; then the old channel is
// closed.
func (c *client) open(ctx context.Context, b Binding, old *bound) (Channel, []Message, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
	defer cancel()
	ch, err := c.providers[b.Provider].Dial(ctx, b.Address, b.ConnID, b.Secret)
	if err != nil {
		return nil, nil, err
	}
	if old == nil {
		return ch, nil, nil
	}
	replayed := old.ch.Unacked()
	for i := range replayed {
		replayed[i].Flags |= FlagRetry
		if _, err := ch.Send(ctx, &replayed[i]); err != nil {
			_ = ch.Close()
			return nil, nil, fmt.Errorf("replaying unacknowledged message %d: %w", replayed[i].Seq, err)
		}
	}
	// The old channel goes off the Request's path: its peer may be
	// unreachable, and a close that waits for it must not hold up the heal.
	go old.ch.Close() //nolint:errcheck // nobody to tell
	return ch, replayed, nil
}

// abandon closes, at the endpoint, a connection that this Request opened
// but cannot use: a refresh keeps what it had.
func (c *client) abandon(ctx context.Context, old *bound, resp *networkservice.Connection, next *chain.NextClient, opts []grpc.CallOption) {
	if old != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.dialTimeout)
	defer cancel()
	_, _ = next.Close(ctx, resp, opts...)
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	b, ok := boundKey.LoadAndDelete(ctx)
	if !ok {
		return next.Close(ctx, conn, opts...)
	}
	// The channel closes while the Close travels to the endpoint: a clean
	// close waits for the peer's last word, a round trip the Close need
	// not wait for. Both are done when Close returns.
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = b.ch.Close()
	}()
	resp, err := next.Close(ctx, conn, opts...)
	<-closed
	return resp, err
}
