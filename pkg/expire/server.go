package expire

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// DefaultLifetime is how long a connection lives without a refresh when the
// previous hop set no expiry on its path segment; DefaultMaxLifetime is the
// longest it lives without one whatever the segment says (NSM's default
// token lifetime).
const (
	DefaultLifetime    = time.Minute
	DefaultMaxLifetime = 10 * time.Minute
)

type options struct {
	lifetime     time.Duration
	maxLifetime  time.Duration
	closeTimeout time.Duration
	log          *logrus.Entry
}

// Option configures NewServer.
type Option func(*options)

// WithDefaultLifetime sets the lifetime used when the previous hop's segment
// has no expiry (default DefaultLifetime). A d that is not positive leaves
// the default.
func WithDefaultLifetime(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.lifetime = d
		}
	}
}

// WithMaxLifetime sets the longest a connection lives without a refresh,
// whatever expiry the previous hop's segment asks for (default
// DefaultMaxLifetime). A d that is not positive leaves the default.
func WithMaxLifetime(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.maxLifetime = d
		}
	}
}

// WithCloseTimeout bounds the Close of an expired connection (default 15 s).
func WithCloseTimeout(d time.Duration) Option {
	return func(o *options) { o.closeTimeout = d }
}

// WithLogger sets the logger.
func WithLogger(log *logrus.Entry) Option {
	return func(o *options) { o.log = log }
}

// deadline is the armed timer of one connection.
type deadline struct {
	timer *time.Timer
	at    time.Time
}

var deadlineKey = chain.NewKey[*deadline]("expire")

type server struct {
	opts options
}

// NewServer returns the expire element.
func NewServer(opts ...Option) chain.ServerElement {
	s := &server{opts: options{lifetime: DefaultLifetime, maxLifetime: DefaultMaxLifetime, closeTimeout: 15 * time.Second, log: logrus.NewEntry(logrus.StandardLogger())}}
	for _, o := range opts {
		o(&s.opts)
	}
	return s
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	resp, err := next.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	at := deadlineOf(resp.GetPrevPathSegment(), time.Now(), s.opts.lifetime, s.opts.maxLifetime)
	if old, ok := deadlineKey.Load(ctx); ok {
		old.timer.Stop()
	}
	h, _ := chain.Reentry(ctx)
	d := &deadline{at: at}
	d.timer = time.AfterFunc(time.Until(at), func() { s.expire(h, d) }) //nolint:contextcheck // fires long after the request context ended; expire makes its own
	deadlineKey.Store(ctx, d)
	return resp, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	if d, ok := deadlineKey.LoadAndDelete(ctx); ok {
		d.timer.Stop()
	}
	return next.Close(ctx, conn)
}

// deadlineOf returns when a connection whose previous hop holds segment prev
// expires unless refreshed: at the segment's expiry, or lifetime after now
// when it has none, and at most maxLifetime after now. It writes the
// deadline into prev, so that the previous hop learns it from the response:
// an NSM client sets no expiry of its own and refreshes on what the path it
// gets back says (NSM's updatetoken does the same for the hop before it).
func deadlineOf(prev *networkservice.PathSegment, now time.Time, lifetime, maxLifetime time.Duration) time.Time {
	at := now.Add(lifetime)
	if e := prev.GetExpires(); e != nil {
		at = e.AsTime()
	}
	if limit := now.Add(maxLifetime); at.After(limit) {
		at = limit
	}
	if prev != nil && (prev.GetExpires() == nil || !prev.GetExpires().AsTime().Equal(at)) {
		prev.Expires = timestamppb.New(at)
	}
	return at
}

// expire closes the connection if d is still its deadline: a refresh that
// ran while the timer fired has armed another.
func (s *server) expire(h chain.Handle, d *deadline) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.closeTimeout)
	defer cancel()
	closed, err := h.CloseIf(ctx, func(ctx context.Context) bool {
		cur, _ := deadlineKey.Load(ctx)
		return cur == d
	})
	log := s.opts.log.WithFields(logrus.Fields{"conn_id": h.ID(), "expired": d.at})
	switch {
	case err != nil:
		log.WithError(err).Warn("expire: closing an expired connection failed")
	case closed:
		log.Info("expire: closed a connection its previous hop stopped refreshing")
	}
}
