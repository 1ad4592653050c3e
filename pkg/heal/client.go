package heal

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/rdma"
)

var watcherKey = chain.NewKey[*watcher]("heal")

type client struct {
	opts options
	hub  *hub
}

// NewClient returns the heal element.
func NewClient(opts ...Option) chain.ClientElement {
	c := &client{opts: options{backoff: DefaultBackoff, attemptTimeout: DefaultAttemptTimeout, log: logrus.NewEntry(logrus.StandardLogger())}}
	for _, o := range opts {
		o(&c.opts)
	}
	if c.opts.monitor != nil {
		c.hub = newHub(c.opts.monitor, c.opts.backoff, c.opts.log)
	}
	return c
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	resp, err := next.Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	ch, _ := rdma.ChannelOf(ctx)
	w, ok := watcherKey.Load(ctx)
	if !ok {
		h, _ := chain.Reentry(ctx)
		w = newWatcher(c, h, resp.GetId())
		watcherKey.Store(ctx, w)
		go w.run() //nolint:contextcheck // the watcher lives as long as the connection, not the request
		if c.hub != nil {
			c.hub.add(w, resp.GetCurrentPathSegment().GetName()) //nolint:contextcheck // the stream lives as long as the hub has connections
		}
	}
	w.bound(resp, ch)
	return resp, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if w, ok := watcherKey.LoadAndDelete(ctx); ok {
		w.stop() // first: the hub may be handing it an event
		if c.hub != nil {
			c.hub.remove(w)
		}
	}
	return next.Close(ctx, conn, opts...)
}

// binding is what the watcher knows of where its connection goes.
type binding struct {
	member, provider, address, connID string
}

func bindingOf(conn *networkservice.Connection) binding {
	p := conn.GetMechanism().GetParameters()
	return binding{member: conn.GetNetworkServiceEndpointName(), provider: p[rdma.ParamProvider], address: p[rdma.ParamAddress], connID: p[rdma.ParamConnID]}
}

// watcher runs one connection's healer: one goroutine that waits for the
// connection's events and its channel's end.
type watcher struct {
	c      *client
	h      chain.Handle
	id     string
	events chan Event
	poke   chan struct{} // the channel changed
	done   chan struct{}
	once   sync.Once
	ctx    context.Context // of heal attempts, ended by stop
	cancel context.CancelFunc

	mu      sync.Mutex
	ch      rdma.Channel
	current binding
	lastErr error
}

func newWatcher(c *client, h chain.Handle, id string) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &watcher{c: c, h: h, id: id, events: make(chan Event, 16), poke: make(chan struct{}, 1), done: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// bound records what a successful Request returned.
func (w *watcher) bound(resp *networkservice.Connection, ch rdma.Channel) {
	w.mu.Lock()
	w.current = bindingOf(resp)
	changed := w.ch != ch
	w.ch = ch
	w.mu.Unlock()
	if changed {
		select {
		case w.poke <- struct{}{}:
		default:
		}
	}
}

// moved reports whether conn, as the server sees it now, is bound
// elsewhere than the client's channel.
func (w *watcher) moved(conn *networkservice.Connection) bool {
	b := bindingOf(conn)
	w.mu.Lock()
	defer w.mu.Unlock()
	return b.member != w.current.member || (b.address != "" && (b.address != w.current.address || b.connID != w.current.connID || b.provider != w.current.provider))
}

// send gives the watcher an event, unless it stopped.
func (w *watcher) send(ev Event) {
	select {
	case w.events <- ev:
	case <-w.done:
	}
}

func (w *watcher) stop() {
	w.once.Do(func() {
		close(w.done)
		w.cancel()
	})
}

func (w *watcher) run() {
	hl := newHealer(w.c.opts.backoff, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))) //nolint:gosec // jitter, not a secret
	var timer *time.Timer
	var retry <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		ch := w.ch
		w.mu.Unlock()
		var chDone <-chan struct{}
		if ch != nil {
			chDone = ch.Done()
		}
		var ev Event
		select {
		case <-w.done:
			return
		case ev = <-w.events:
		case <-chDone:
			w.mu.Lock()
			if w.ch == ch {
				w.ch = nil // watch it once
			}
			w.mu.Unlock()
			if errors.Is(ch.Err(), rdma.ErrClosed) {
				continue // closed here: a rebind or a Close, not a failure
			}
			ev = ChannelDown
		case <-retry:
			retry = nil
			ev = RetryDue
		case <-w.poke:
			continue
		}
		a := hl.step(ev, time.Now())
		if a.Started {
			w.report(Report{ConnID: w.id, Kind: Started, Cause: ev})
		}
		if a.Failed {
			w.mu.Lock()
			err := w.lastErr
			w.mu.Unlock()
			w.report(Report{ConnID: w.id, Kind: Failed, Cause: ev, Err: err})
		}
		if a.Succeeded {
			w.report(Report{ConnID: w.id, Kind: Succeeded, Took: a.Took})
		}
		if a.RetryAfter > 0 {
			if timer == nil {
				timer = time.NewTimer(a.RetryAfter)
			} else {
				timer.Reset(a.RetryAfter)
			}
			retry = timer.C
		}
		if a.Request {
			go w.heal(a.Reselect)
		}
	}
}

// heal re-requests the connection from the start of the chain.
func (w *watcher) heal(reselect bool) {
	ctx, cancel := context.WithTimeout(w.ctx, w.c.opts.attemptTimeout)
	defer cancel()
	_, err := w.h.Request(ctx, func(r *networkservice.NetworkServiceRequest) {
		if reselect {
			r.GetConnection().NetworkServiceEndpointName = ""
			r.GetConnection().Mechanism = nil
		}
	})
	switch {
	case errors.Is(err, chain.ErrConnectionClosed):
		w.send(Closed)
	case err != nil:
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
		w.c.opts.log.WithError(err).WithField("conn_id", w.id).Debug("heal: attempt failed")
		w.send(HealFailed)
	default:
		w.send(HealSucceeded)
	}
}

func (w *watcher) report(r Report) {
	if w.c.opts.observer != nil {
		w.c.opts.observer(r)
	}
}
