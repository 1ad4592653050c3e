package embedded

import (
	"container/heap"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/internal/feed"
)

// Provider is the in-process membership provider. It implements
// view.Provider, and JoinLease for the membership service. New returns the
// concrete type because the membership service needs JoinLease, which is
// not part of view.Provider.
type Provider struct {
	opts options

	mu        sync.Mutex
	closed    bool
	groups    map[string]*group
	lastEpoch uint64
	lastInc   uint64
	// leases orders leased members by the expiry time they had when pushed;
	// renewals only move a member's expiry later, so the heap is corrected
	// lazily when an entry comes due.
	leases    leaseHeap
	stopTimer func() bool
	timerAt   time.Time
	// timerGen tells the armed timer from earlier ones that fired while
	// it was being replaced.
	timerGen uint64
}

// group is one group's state; all fields are guarded by Provider.mu.
type group struct {
	name    string
	id      view.ID
	members []*member
	byID    map[string]*member
	// current is the view installed last, shared with every feed.
	current *view.View
	feeds   map[*feed.Feed]struct{}
	stats   view.Stats
}

// member is one membership; all fields but m and done are guarded by
// Provider.mu.
type member struct {
	g       *group
	m       view.Member
	leased  bool
	expires time.Time
	ended   bool
	err     error
	done    chan struct{}
}

// New returns an embedded provider. Close it to end every membership and
// watch it holds.
func New(opts ...Option) *Provider {
	o := options{
		clock:     systemClock{},
		heartbeat: DefaultHeartbeatInterval,
		lease:     DefaultLeaseTime,
		limits:    view.DefaultLimits,
		log:       logrus.NewEntry(logrus.StandardLogger()),
	}
	for _, opt := range opts {
		opt(&o)
	}
	o.lease = max(o.lease, 2*o.heartbeat)
	return &Provider{opts: o, groups: map[string]*group{}}
}

// HeartbeatInterval returns how often a leased member must renew its lease.
func (p *Provider) HeartbeatInterval() time.Duration { return p.opts.heartbeat }

// LeaseTime returns how long a leased member stays without a heartbeat.
func (p *Provider) LeaseTime() time.Duration { return p.opts.lease }

// Limits returns the limits members are checked against.
func (p *Provider) Limits() view.Limits { return p.opts.limits }

var errClosed = status.Error(codes.Unavailable, "view: the embedded provider is closed")

// View implements view.Provider.
func (p *Provider) View(_ context.Context, group string) (view.View, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return view.View{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return view.View{}, errClosed
	}
	g := p.groups[group]
	if g == nil || g.current == nil {
		return view.View{Group: group}, nil
	}
	v := *g.current
	v.Joined = v.Members
	return v, nil
}

// Watch implements view.Provider.
func (p *Provider) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errClosed
	}
	g := p.group(group)
	f := feed.New(ctx, after, func(f *feed.Feed) { p.unwatch(g, f) })
	g.feeds[f] = struct{}{}
	if g.current != nil {
		f.Publish(g.current)
	} else {
		f.Publish(&view.View{Group: group})
	}
	return f, nil
}

func (p *Provider) unwatch(g *group, f *feed.Feed) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(g.feeds, f)
	p.dropIfIdle(g)
}

// Join implements view.Provider. A member joined in-process has no lease: it
// stays until Leave or Close.
func (p *Provider) Join(_ context.Context, group string, m view.Member) (view.Membership, error) {
	rec, err := p.join(group, m, false)
	if err != nil {
		return nil, err
	}
	return &membership{p: p, rec: rec}, nil
}

// JoinLease makes m a member of group under a lease: the member is removed
// when no Renew came for LeaseTime, or at once with Fail or Leave. It is
// what the membership service uses for members in other processes.
func (p *Provider) JoinLease(_ context.Context, group string, m view.Member) (*Lease, error) {
	rec, err := p.join(group, m, true)
	if err != nil {
		return nil, err
	}
	return &Lease{membership{p: p, rec: rec}}, nil
}

func (p *Provider) join(group string, m view.Member, leased bool) (*member, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return nil, err
	}
	if err := p.opts.limits.CheckMember(m); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errClosed
	}
	if g := p.groups[group]; g != nil {
		if old := g.byID[m.ID]; old != nil {
			return nil, status.Errorf(codes.AlreadyExists, "member %q of group %q is held by a live member (incarnation %d)", m.ID, group, old.m.Incarnation)
		}
		if len(g.members) >= p.opts.limits.MaxMembers {
			return nil, status.Errorf(codes.ResourceExhausted, "group %q has %d members, the limit", group, len(g.members))
		}
	}
	g := p.group(group)
	m = m.Clone()
	m.Incarnation = p.next(&p.lastInc)
	rec := &member{g: g, m: m, leased: leased, done: make(chan struct{})}
	if leased {
		rec.expires = p.opts.clock.Now().Add(p.opts.lease)
		heap.Push(&p.leases, leaseEntry{at: rec.expires, rec: rec})
		p.arm()
	}
	g.members = append(g.members, rec)
	g.byID[m.ID] = rec
	g.stats.Joins++
	p.install(g)
	p.opts.log.WithFields(logrus.Fields{"group": group, "member": m.ID, "incarnation": m.Incarnation, "view": g.id.String()}).Info("member joined")
	return rec, nil
}

// group returns the group named name, creating it without a view.
func (p *Provider) group(name string) *group {
	g := p.groups[name]
	if g == nil {
		g = &group{name: name, byID: map[string]*member{}, feeds: map[*feed.Feed]struct{}{}}
		p.groups[name] = g
	}
	return g
}

// next returns a number greater than *last and at least the clock's Unix
// time in nanoseconds, so that epochs and incarnations handed out by a later
// provider (a restarted process) are greater than this one's.
func (p *Provider) next(last *uint64) uint64 {
	n := *last + 1
	if now := p.opts.clock.Now().UnixNano(); now > 0 && uint64(now) > n {
		n = uint64(now)
	}
	*last = n
	return n
}

// install installs the next view of g and publishes it.
func (p *Provider) install(g *group) {
	if g.id.IsZero() {
		g.id = view.ID{Epoch: p.next(&p.lastEpoch), Seq: 1}
	} else {
		g.id.Seq++
	}
	members := make([]view.Member, len(g.members))
	for i, rec := range g.members {
		members[i] = rec.m
	}
	g.current = &view.View{Group: g.name, ID: g.id, Members: members}
	g.stats.Views++
	for f := range g.feeds {
		f.Publish(g.current)
	}
	if p.opts.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		p.opts.log.WithFields(logrus.Fields{"group": g.name, "view": g.id.String(), "members": len(members)}).Debug("view installed")
	}
}

// remove ends rec with err and installs the view without it; the caller
// counts the removal and holds p.mu. It reports whether rec was live.
func (p *Provider) remove(rec *member, err error) bool {
	if rec.ended {
		return false
	}
	p.end(rec, err)
	g := rec.g
	g.members = slices.DeleteFunc(g.members, func(r *member) bool { return r == rec })
	delete(g.byID, rec.m.ID)
	p.install(g)
	p.dropIfIdle(g)
	return true
}

func (p *Provider) end(rec *member, err error) {
	rec.ended = true
	rec.err = err
	close(rec.done)
}

// dropIfIdle forgets g, its epoch and its counters, once it has neither
// members nor watchers: a later join recreates it in a new epoch.
func (p *Provider) dropIfIdle(g *group) {
	if len(g.members) == 0 && len(g.feeds) == 0 && p.groups[g.name] == g {
		delete(p.groups, g.name)
	}
}

// Stats implements view.Provider.
func (p *Provider) Stats(_ context.Context, group string) (view.Stats, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return view.Stats{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return view.Stats{}, errClosed
	}
	if g := p.groups[group]; g != nil {
		return g.stats, nil
	}
	return view.Stats{}, nil
}

// Close ends every membership (Err returns codes.Unavailable) and every
// watch, and stops the lease timer. Close is idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var feeds []*feed.Feed
	for _, g := range p.groups {
		for _, rec := range g.members {
			p.end(rec, errClosed)
		}
		for f := range g.feeds {
			feeds = append(feeds, f)
		}
	}
	clear(p.groups)
	p.leases = nil
	if p.stopTimer != nil {
		p.stopTimer()
		p.stopTimer = nil
	}
	p.mu.Unlock()
	for _, f := range feeds {
		f.Fail(errClosed)
	}
	return nil
}

// arm sets the timer for the earliest lease entry; the caller holds p.mu.
func (p *Provider) arm() {
	if len(p.leases) == 0 {
		if p.stopTimer != nil {
			p.stopTimer()
			p.stopTimer = nil
		}
		return
	}
	at := p.leases[0].at
	if p.stopTimer != nil {
		if p.timerAt.Equal(at) {
			return
		}
		p.stopTimer()
	}
	p.timerAt = at
	p.timerGen++
	gen := p.timerGen
	p.stopTimer = p.opts.clock.AfterFunc(at.Sub(p.opts.clock.Now()), func() { p.expire(gen) })
}

// expire removes the members whose lease ran out, in one view per group.
// gen is the generation of the timer that fired.
func (p *Provider) expire(gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if gen == p.timerGen {
		p.stopTimer = nil
	}
	now := p.opts.clock.Now()
	var due []*member
	for len(p.leases) > 0 && !p.leases[0].at.After(now) {
		e := heap.Pop(&p.leases).(leaseEntry)
		switch {
		case e.rec.ended:
		case e.rec.expires.After(now):
			heap.Push(&p.leases, leaseEntry{at: e.rec.expires, rec: e.rec})
		default:
			due = append(due, e.rec)
		}
	}
	// One view per group for everything that expired at once.
	byGroup := map[*group][]*member{}
	var order []*group
	for _, rec := range due {
		if _, ok := byGroup[rec.g]; !ok {
			order = append(order, rec.g)
		}
		byGroup[rec.g] = append(byGroup[rec.g], rec)
	}
	for _, g := range order {
		recs := byGroup[g]
		for _, rec := range recs {
			p.end(rec, status.Errorf(codes.DeadlineExceeded, "the lease of member %q of group %q expired: no heartbeat for %v", rec.m.ID, g.name, p.opts.lease))
			delete(g.byID, rec.m.ID)
			g.stats.Expiries++
			p.opts.log.WithFields(logrus.Fields{"group": g.name, "member": rec.m.ID, "incarnation": rec.m.Incarnation}).Info("member expired")
		}
		g.members = slices.DeleteFunc(g.members, func(r *member) bool { return r.ended })
		p.install(g)
		p.dropIfIdle(g)
	}
	p.arm()
}

type leaseEntry struct {
	at  time.Time
	rec *member
}

type leaseHeap []leaseEntry

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h leaseHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *leaseHeap) Push(x any)        { *h = append(*h, x.(leaseEntry)) }
func (h *leaseHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = leaseEntry{}
	*h = old[:len(old)-1]
	return e
}
