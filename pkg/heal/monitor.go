package heal

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
)

// hub follows the server's monitor stream for all the connections of one
// heal element (selected by the client's path segment name) and gives each
// watcher the events of its connection. It runs only while it has
// watchers.
type hub struct {
	mc      networkservice.MonitorConnectionClient
	backoff Backoff
	log     *logrus.Entry

	mu       sync.Mutex
	watchers map[string]*watcher // by the client's connection ID
	name     string
	cancel   context.CancelFunc
	stopped  chan struct{}
}

func newHub(mc networkservice.MonitorConnectionClient, b Backoff, log *logrus.Entry) *hub {
	return &hub{mc: mc, backoff: b, log: log, watchers: map[string]*watcher{}}
}

func (h *hub) add(w *watcher, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchers[w.id] = w
	if h.cancel == nil {
		h.name = name
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel, h.stopped = cancel, make(chan struct{})
		go h.run(ctx, name, h.stopped)
	}
}

func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	if h.watchers[w.id] == w {
		delete(h.watchers, w.id)
	}
	var cancel context.CancelFunc
	var stopped chan struct{}
	if len(h.watchers) == 0 && h.cancel != nil {
		cancel, stopped = h.cancel, h.stopped
		h.cancel, h.stopped = nil, nil
	}
	h.mu.Unlock()
	if cancel != nil {
		cancel()
		<-stopped
	}
}

func (h *hub) lookup(id string) *watcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watchers[id]
}

func (h *hub) all() []*watcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*watcher, 0, len(h.watchers))
	for _, w := range h.watchers {
		out = append(out, w)
	}
	return out
}

// run subscribes, and subscribes again after the stream breaks, with
// back-off, until ctx ends. Every break of a stream that was up tells every
// watcher that the control stream is down.
func (h *hub) run(ctx context.Context, name string, stopped chan struct{}) {
	defer close(stopped)
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) //nolint:gosec // jitter, not a secret
	afterBreak := false
	for attempt := 1; ; attempt++ {
		up, err := h.follow(ctx, name, afterBreak)
		if ctx.Err() != nil {
			return
		}
		h.log.WithError(err).Debug("heal: the monitor stream broke")
		if up {
			for _, w := range h.all() {
				w.send(ControlDown)
			}
			afterBreak, attempt = true, 1
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(h.backoff.delay(attempt, rng)):
		}
	}
}

// follow reads one subscription until it breaks; up reports that it
// delivered something. After a break, the first state the server sends
// tells which connections it lost (it restarted): those refresh.
func (h *hub) follow(ctx context.Context, name string, afterBreak bool) (up bool, err error) {
	stream, err := h.mc.MonitorConnections(ctx, &networkservice.MonitorScopeSelector{
		PathSegments: []*networkservice.PathSegment{{Name: name}},
	})
	if err != nil {
		return false, err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return up, err
		}
		up = true
		switch ev.GetType() {
		case networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER:
			seen := map[string]bool{}
			for _, conn := range ev.GetConnections() {
				if id := clientID(conn, name); id != "" {
					seen[id] = true
					if w := h.lookup(id); w != nil && w.moved(conn) {
						w.send(Moved)
					}
				}
			}
			if afterBreak {
				for _, w := range h.all() {
					if !seen[w.id] {
						w.send(ControlDown) // the server lost it: a refresh gives it back
					}
				}
			}
		case networkservice.ConnectionEventType_UPDATE:
			for _, conn := range ev.GetConnections() {
				if w := h.lookup(clientID(conn, name)); w != nil && w.moved(conn) {
					w.send(Moved)
				}
			}
		case networkservice.ConnectionEventType_DELETE:
			for _, conn := range ev.GetConnections() {
				if w := h.lookup(clientID(conn, name)); w != nil {
					w.send(MemberGone)
				}
			}
		}
	}
}

// clientID returns the ID of the client's own segment in conn's path.
func clientID(conn *networkservice.Connection, name string) string {
	for _, s := range conn.GetPath().GetPathSegments() {
		if s.GetName() == name {
			return s.GetId()
		}
	}
	return ""
}
