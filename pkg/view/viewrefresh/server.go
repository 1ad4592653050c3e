package viewrefresh

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/clienturl"
	"github.com/tether-mesh/tether/pkg/view"
)

// ViewIDKey is the key of Connection.Context.ExtraContext under which the
// element records the ID of the view it routed the connection by, in the
// form view.ID.String writes ("epoch.seq").
const ViewIDKey = "tether.view"

// state is a connection's routing, kept in the chain's metadata.
type state struct {
	g      *group
	handle chain.Handle
	// bound is the member the connection was last routed to with success,
	// and url where it was sent.
	bound memberKey
	url   *url.URL
}

var stateKey = chain.NewKey[*state]("viewrefresh")

type server struct {
	ctx     context.Context
	p       view.Provider
	opts    options
	started time.Time

	mu     sync.Mutex
	groups map[string]*group

	// moving counts the goroutines that move connections; tests wait on it.
	moving sync.WaitGroup
	// onInstall, when set (by tests), is called after each view installed.
	onInstall func(group string, id view.ID)
}

// group is a group the element follows, while connections use it.
type group struct {
	name    string
	current atomic.Pointer[snapshot]
	// ready is closed when the first view arrived, or the first watch
	// failed (err then says why).
	ready chan struct{}
	err   error
	// ctx is the group's life in the element: its watch and the moves of
	// its connections end with it.
	ctx  context.Context
	stop context.CancelFunc

	// Guarded by server.mu:
	refs  int
	conns map[string]map[string]binding // member ID -> connection ID -> binding
}

// binding is an index entry: a connection routed to an incarnation of a
// member.
type binding struct {
	incarnation uint64
	handle      chain.Handle
}

// NewServer returns the view-refresh element. It follows groups through p
// until ctx ends; it must run in a chain made by chain.NewServer, whose
// metadata and re-entry it uses.
func NewServer(ctx context.Context, p view.Provider, opts ...Option) chain.ServerElement {
	o := options{
		policy:          Primary,
		log:             logrus.NewEntry(logrus.StandardLogger()),
		reselectTimeout: 30 * time.Second,
		reselectWorkers: 16,
		retryMin:        50 * time.Millisecond,
		retryMax:        2 * time.Second,
		warmup:          DefaultWarmup,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return &server{ctx: ctx, p: p, opts: o, started: time.Now(), groups: map[string]*group{}}
}

// route is where a request goes: the member of rank in snap, of group g.
type route struct {
	st          *state
	established bool
	g           *group
	// acquired is set when the request took a reference on g that it must
	// give back unless it succeeds.
	acquired bool
	snap     *snapshot
	rank     int
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	r, err := s.route(ctx, req.GetConnection())
	if err != nil {
		return nil, err
	}
	st, g, snap := r.st, r.g, r.snap
	m := &snap.v.Members[r.rank]
	u := snap.urls[r.rank]
	conn := req.GetConnection()
	record(conn, m.ID, snap.id)

	clienturl.SetClientURL(ctx, u)
	resp, err := next.Request(ctx, req)
	if err != nil {
		s.undo(g, r.acquired)
		return nil, err
	}
	if resp != nil && resp != conn {
		record(resp, m.ID, snap.id)
	}
	key := memberKey{id: m.ID, incarnation: m.Incarnation}
	if r.acquired || st.bound != key {
		s.bind(st, g, key, u, r.acquired)
		if !r.established {
			stateKey.Store(ctx, st)
		}
	}
	return resp, nil
}

// route finds where conn goes: the group's current view from memory, the
// connection's member when the view holds it and it matches the selector,
// and otherwise the member the policy chooses. For an established
// connection that stays where it is, it allocates nothing and calls
// nothing but the chain's metadata.
func (s *server) route(ctx context.Context, conn *networkservice.Connection) (r route, err error) {
	name := conn.GetNetworkService()
	r.st, r.established = stateKey.Load(ctx)
	if r.established && r.st.g.name == name {
		r.g = r.st.g
	} else {
		if err := view.DefaultLimits.CheckGroup(name); err != nil {
			return r, status.Errorf(codes.InvalidArgument, "the connection's network service names no group: %s", status.Convert(err).Message())
		}
		if !r.established {
			h, ok := chain.Reentry(ctx)
			if !ok {
				return r, status.Error(codes.Internal, "viewrefresh must run in a chain made by chain.NewServer")
			}
			r.st = &state{handle: h}
		}
		if r.g, err = s.acquire(ctx, name); err != nil {
			return r, err
		}
		r.acquired = true
	}
	r.snap = r.g.current.Load()
	sel := conn.GetLabels()[SelectorLabel]
	rank, ok := r.snap.member(conn.GetNetworkServiceEndpointName())
	if ok && sel != "" {
		if err := checkSelector(sel); err != nil {
			s.undo(r.g, r.acquired)
			return r, err
		}
		ok = matches(sel, r.snap.v.Members[rank].Labels)
	}
	if !ok && !r.established && conn.GetNetworkServiceEndpointName() != "" {
		if since := time.Since(s.started); since < s.opts.warmup {
			s.undo(r.g, r.acquired)
			return r, status.Errorf(codes.Unavailable, "member %q of group %q is not in the view yet: this forwarder started %v ago and members are still joining; try again", conn.GetNetworkServiceEndpointName(), name, since.Round(time.Millisecond))
		}
	}
	if !ok {
		if rank, err = s.choose(r.g, r.snap, conn, sel); err != nil {
			s.undo(r.g, r.acquired)
			return r, err
		}
	}
	r.rank = rank
	return r, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	st, ok := stateKey.LoadAndDelete(ctx)
	if ok && st.url != nil {
		clienturl.SetClientURL(ctx, st.url)
	}
	resp, err := next.Close(ctx, conn)
	if ok {
		s.mu.Lock()
		s.unbindLocked(st)
		s.releaseLocked(st.g)
		s.mu.Unlock()
	}
	return resp, err
}

// record writes the member and the view on conn.
func record(conn *networkservice.Connection, member, viewID string) {
	conn.NetworkServiceEndpointName = member
	if conn.Context == nil {
		conn.Context = &networkservice.ConnectionContext{}
	}
	if conn.Context.ExtraContext == nil {
		conn.Context.ExtraContext = map[string]string{}
	}
	if conn.Context.ExtraContext[ViewIDKey] != viewID {
		conn.Context.ExtraContext[ViewIDKey] = viewID
	}
}

// bind moves the connection's index entry to m in g, releasing the group it
// held before when the connection changed groups. When the view no longer
// holds m, because a view that removed it came while the request ran, the
// connection is moved at once.
func (s *server) bind(st *state, g *group, m memberKey, u *url.URL, acquired bool) {
	s.mu.Lock()
	s.unbindLocked(st)
	if acquired && st.g != nil {
		s.releaseLocked(st.g)
	}
	st.g, st.bound, st.url = g, m, u
	members := g.conns[m.id]
	if members == nil {
		members = map[string]binding{}
		g.conns[m.id] = members
	}
	members[st.handle.ID()] = binding{incarnation: m.incarnation, handle: st.handle}
	gone := !g.current.Load().has(m)
	s.mu.Unlock()
	if gone {
		// The move outlives the request: it runs in the group's life.
		s.reselect(g.ctx, g, m, []chain.Handle{st.handle}) //nolint:contextcheck // see above
	}
	if s.opts.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		s.opts.log.WithFields(logrus.Fields{"conn_id": st.handle.ID(), "group": g.name, "member": m.id}).Debug("connection routed")
	}
}

func (s *server) unbindLocked(st *state) {
	if st.g == nil || st.bound.id == "" {
		return
	}
	members := st.g.conns[st.bound.id]
	delete(members, st.handle.ID())
	if len(members) == 0 {
		delete(st.g.conns, st.bound.id)
	}
}

// undo releases a group acquired for a request that failed.
func (s *server) undo(g *group, acquired bool) {
	if acquired {
		s.mu.Lock()
		s.releaseLocked(g)
		s.mu.Unlock()
	}
}

// choose selects a member for conn by the policy among the members with a
// URL that match sel.
func (s *server) choose(g *group, snap *snapshot, conn *networkservice.Connection, sel string) (int, error) {
	if sel != "" {
		if err := checkSelector(sel); err != nil {
			return 0, err
		}
	}
	best := -1
	var bestScore uint64
	var counts map[string]map[string]binding
	if s.opts.policy == LeastConnections {
		s.mu.Lock()
		defer s.mu.Unlock()
		counts = g.conns
	}
	for i, m := range snap.v.Members {
		if snap.urls[i] == nil || (sel != "" && !matches(sel, m.Labels)) {
			continue
		}
		if s.opts.policy == Primary {
			best = i // members are in rank order: the first eligible
			break
		}
		var score uint64
		switch s.opts.policy {
		case Rendezvous:
			score = rendezvous(conn.GetId(), m.ID)
		default: // LeastConnections
			score = ^uint64(len(counts[m.ID]))
		}
		if best < 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		if sel != "" {
			return 0, status.Errorf(codes.Unavailable, "no member of group %q matches selector %q in view %s", g.name, sel, snap.id)
		}
		return 0, status.Errorf(codes.Unavailable, "group %q has no member with a gRPC endpoint in view %s", g.name, snap.id)
	}
	return best, nil
}

// rendezvous is the weight of member for connection: FNV-1a over both,
// finished with a 64-bit mixer (splitmix64's) so that close inputs spread.
// It allocates nothing and is the same in every process.
func rendezvous(connID, member string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	x := uint64(offset)
	for i := range len(connID) {
		x = (x ^ uint64(connID[i])) * prime
	}
	x *= prime // the separator byte 0
	for i := range len(member) {
		x = (x ^ uint64(member[i])) * prime
	}
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// acquire takes a reference on the group called name, starts following it
// when nobody did, and waits for its first view.
func (s *server) acquire(ctx context.Context, name string) (*group, error) {
	s.mu.Lock()
	g := s.groups[name]
	if g == nil {
		// The group lives in the element's life, not the request's.
		wctx, stop := context.WithCancel(s.ctx)
		g = &group{name: name, ready: make(chan struct{}), ctx: wctx, stop: stop, conns: map[string]map[string]binding{}}
		s.groups[name] = g
		go s.follow(wctx, g) //nolint:contextcheck // see above
	}
	g.refs++
	s.mu.Unlock()
	select {
	case <-g.ready:
	case <-ctx.Done():
		s.undo(g, true)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if g.current.Load() == nil {
		s.undo(g, true)
		return nil, g.err
	}
	return g, nil
}

func (s *server) releaseLocked(g *group) {
	g.refs--
	if g.refs == 0 {
		g.stop()
		if s.groups[g.name] == g {
			delete(s.groups, g.name)
		}
	}
}

// follow watches g until ctx ends, watching again from the last view
// received when a watch breaks.
func (s *server) follow(ctx context.Context, g *group) {
	log := s.opts.log.WithField("group", g.name)
	var last view.View
	ready := false
	delay := s.opts.retryMin
	for {
		w, err := s.p.Watch(ctx, g.name, last)
		if err == nil {
			for {
				v, nerr := w.Next(ctx)
				if nerr != nil {
					err = nerr
					break
				}
				s.install(ctx, g, v)
				last = view.View{Group: v.Group, ID: v.ID, Members: v.Members}
				delay = s.opts.retryMin
				if !ready {
					ready = true
					close(g.ready)
				}
			}
			w.Close()
		}
		if ctx.Err() != nil {
			if !ready {
				g.err = status.Errorf(codes.Unavailable, "view refresh stopped following group %q", g.name)
				close(g.ready)
			}
			return
		}
		if !ready {
			g.err = status.Errorf(codes.Unavailable, "cannot watch group %q: %s", g.name, status.Convert(err).Message())
			ready = true
			close(g.ready)
		}
		log.WithError(err).Warn("the watch of the group ended; watching again")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, s.opts.retryMax)
	}
}

// install makes v the group's current view and moves every connection
// routed to a member the view does not hold: those of the members it
// removed, and those an earlier move could not place (the group was empty,
// say), which get another chance with every view.
func (s *server) install(ctx context.Context, g *group, v view.View) {
	snap, bad := newSnapshot(v, g.current.Load())
	g.current.Store(snap)
	log := s.opts.log.WithFields(logrus.Fields{"group": g.name, "view": snap.id})
	if len(bad) > 0 {
		log.WithField("members", bad).Warn("members without a usable gRPC endpoint URL are never selected")
	}
	stranded := map[memberKey][]chain.Handle{}
	s.mu.Lock()
	for id, conns := range g.conns {
		for _, b := range conns {
			if m := (memberKey{id: id, incarnation: b.incarnation}); !snap.has(m) {
				stranded[m] = append(stranded[m], b.handle)
			}
		}
	}
	s.mu.Unlock()
	moved := 0
	for m, handles := range stranded {
		moved += len(handles)
		s.reselect(ctx, g, m, handles)
	}
	log.WithFields(logrus.Fields{"members": len(v.Members), "joined": len(v.Joined), "left": len(v.Left), "moved": moved}).Info("view installed")
	if s.onInstall != nil {
		s.onInstall(g.name, v.ID)
	}
}

// reselect re-enters the chain for each connection with member m cleared, a
// few at a time, on goroutines of their own.
func (s *server) reselect(ctx context.Context, g *group, m memberKey, handles []chain.Handle) {
	var next atomic.Int64
	workers := min(s.opts.reselectWorkers, len(handles))
	s.moving.Add(workers)
	for range workers {
		go func() {
			defer s.moving.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(handles) {
					return
				}
				s.move(ctx, g, m, handles[i])
			}
		}()
	}
}

func (s *server) move(ctx context.Context, g *group, m memberKey, h chain.Handle) {
	if ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.reselectTimeout)
	defer cancel()
	conn, err := h.Request(ctx, func(req *networkservice.NetworkServiceRequest) {
		if req.GetConnection().GetNetworkServiceEndpointName() == m.id {
			req.GetConnection().NetworkServiceEndpointName = ""
		}
	})
	log := s.opts.log.WithFields(logrus.Fields{"conn_id": h.ID(), "group": g.name, "member": m.id})
	switch {
	case errors.Is(err, chain.ErrConnectionClosed):
	case err != nil:
		log.WithError(err).Warn("could not move a connection off a departed member")
	default:
		log.WithField("to", conn.GetNetworkServiceEndpointName()).Debug("connection moved off a departed member")
	}
}
