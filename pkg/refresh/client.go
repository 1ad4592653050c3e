package refresh

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// minDelay keeps a connection with an expiry in the past, or about to pass,
// from refreshing in a tight loop.
const minDelay = 10 * time.Millisecond

// schedule is one connection's refresh timer.
type schedule struct {
	mu      sync.Mutex
	timer   *time.Timer
	expires time.Time
	stopped bool
}

func (s *schedule) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.timer.Stop()
}

var scheduleKey = chain.NewKey[*schedule]("refresh")

type client struct {
	log *logrus.Entry
}

// NewClient returns the refresh element.
func NewClient() chain.ClientElement {
	return &client{log: logrus.NewEntry(logrus.StandardLogger())}
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	resp, err := next.Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	if old, ok := scheduleKey.LoadAndDelete(ctx); ok {
		old.stop()
	}
	expires, ok := earliestExpiry(resp.GetPath())
	if !ok {
		return resp, nil // nothing to keep alive
	}
	h, _ := chain.Reentry(ctx)
	s := &schedule{expires: expires}
	s.mu.Lock()
	s.timer = time.AfterFunc(delay(s.expires), func() { c.refresh(h, s) }) //nolint:contextcheck // fires after the request context ended; refresh makes its own
	s.mu.Unlock()
	scheduleKey.Store(ctx, s)
	return resp, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if s, ok := scheduleKey.LoadAndDelete(ctx); ok {
		s.stop()
	}
	return next.Close(ctx, conn, opts...)
}

// earliestExpiry returns the earliest expiry of the path's segments from
// the current one (this chain's caller's, as the response comes back) on,
// and whether any has one. Each hop after the caller closes the connection
// when the segment before it expires, and only the caller's refreshes renew
// them: a forwarder, say, does not refresh on its own, so its segment may
// expire before the client's (NSM's refresh looks at every segment too).
// The segments before the caller's are the business of the hops before it.
func earliestExpiry(p *networkservice.Path) (time.Time, bool) {
	var at time.Time
	segs := p.GetPathSegments()
	for i := int(p.GetIndex()); i < len(segs); i++ {
		if e := segs[i].GetExpires(); e != nil && (at.IsZero() || e.AsTime().Before(at)) {
			at = e.AsTime()
		}
	}
	return at, !at.IsZero()
}

// delay is a third of the time left before expires.
func delay(expires time.Time) time.Duration {
	return max(time.Until(expires)/3, minDelay)
}

// refresh requests the connection again; a successful refresh arms the next
// timer. A failed one tries again, a third of the remaining time later,
// until the expiry passes: then the far end has closed the connection and
// healing it is heal's business.
func (c *client) refresh(h chain.Handle, s *schedule) {
	ctx, cancel := context.WithDeadline(context.Background(), s.expires)
	defer cancel()
	_, err := h.Request(ctx, nil)
	if err == nil || errors.Is(err, chain.ErrConnectionClosed) {
		return
	}
	log := c.log.WithField("conn_id", h.ID()).WithError(err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || !time.Now().Before(s.expires) {
		log.Warn("refresh: the connection expired without a successful refresh")
		return
	}
	log.Debug("refresh: failed, trying again")
	s.timer = time.AfterFunc(delay(s.expires), func() { c.refresh(h, s) }) //nolint:contextcheck // fires after the request context ended; refresh makes its own
}
