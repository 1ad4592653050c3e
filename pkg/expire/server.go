package expire

import (
	"context"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// DefaultLifetime is how long a connection lives without a refresh when the
// previous hop set no expiry on its path segment.
const DefaultLifetime = time.Minute

type options struct {
	lifetime     time.Duration
	closeTimeout time.Duration
	log          *logrus.Entry
}

// Option configures NewServer.
type Option func(*options)

// WithDefaultLifetime sets the lifetime used when the previous hop's segment
// has no expiry (default DefaultLifetime).
func WithDefaultLifetime(d time.Duration) Option {
	return func(o *options) { o.lifetime = d }
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
	s := &server{opts: options{lifetime: DefaultLifetime, closeTimeout: 15 * time.Second, log: logrus.NewEntry(logrus.StandardLogger())}}
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
	at := time.Now().Add(s.opts.lifetime)
	if prev := resp.GetPrevPathSegment(); prev.GetExpires() != nil {
		at = prev.GetExpires().AsTime()
	}
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
