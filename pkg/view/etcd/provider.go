package etcd

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/internal/feed"
	"github.com/tether-mesh/tether/pkg/view/internal/wire"
)

// Provider is the etcd membership provider. It implements view.Provider;
// New returns the concrete type for Close.
type Provider struct {
	c    *clientv3.Client
	opts options
	keys keys

	ctx    context.Context // the provider's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	memberships map[*membership]struct{}
	watches     map[*context.CancelFunc]struct{}
	stats       map[string]*groupStats
}

// groupStats are a group's counters in this provider instance, kept while
// the instance watches the group or holds a member in it, and afterwards
// when the instance ever held a member in it.
type groupStats struct {
	view.Stats
	last view.ID // the greatest view this instance installed
	refs int
}

var watchCount atomic.Int64

// New returns a provider that keeps its groups in etcd through c. The
// caller owns c; Close the provider before closing c.
func New(c *clientv3.Client, opts ...Option) *Provider {
	o := options{
		prefix:   DefaultPrefix,
		ttl:      DefaultTTL,
		limits:   view.DefaultLimits,
		log:      logrus.NewEntry(logrus.StandardLogger()),
		progress: 50 * time.Millisecond,
		timeout:  5 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	o.ttl = max(o.ttl.Round(time.Second), time.Second)
	if o.ttl < time.Second {
		o.ttl = time.Second
	}
	if o.heartbeat <= 0 {
		o.heartbeat = o.ttl / 3
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Provider{
		c: c, opts: o, keys: keys{prefix: o.prefix},
		ctx: ctx, cancel: cancel,
		memberships: map[*membership]struct{}{},
		watches:     map[*context.CancelFunc]struct{}{},
		stats:       map[string]*groupStats{},
	}
}

// TTL returns the lease TTL of members joined through the provider.
func (p *Provider) TTL() time.Duration { return p.opts.ttl }

var errClosed = status.Error(codes.Unavailable, "view: the etcd provider is closed")

// spawn runs f on a goroutine Close waits for, unless the provider is
// closed; the caller holds p.mu.
func (p *Provider) spawnLocked(f func()) bool {
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// Close ends every watch and every membership of the provider: it revokes
// their leases, so the members leave their groups at once (their Err
// returns codes.Unavailable). It does not close the etcd client.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for stop := range p.watches {
		(*stop)()
	}
	clear(p.watches)
	ms := make([]*membership, 0, len(p.memberships))
	for m := range p.memberships {
		ms = append(ms, m)
	}
	p.mu.Unlock()
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.shutdown(context.Background(), errClosed) })
	}
	wg.Wait()
	p.cancel()
	p.wg.Wait()
	return errors.Join(errs...)
}

// etcdError converts an error of the etcd client into a status error.
func etcdError(what string, err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return status.Errorf(s.Code(), "%s: %s", what, s.Message())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// Stats implements view.Provider: the counters of what this provider
// instance did and saw.
func (p *Provider) Stats(_ context.Context, group string) (view.Stats, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return view.Stats{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return view.Stats{}, errClosed
	}
	if st := p.stats[group]; st != nil {
		return st.Stats, nil
	}
	return view.Stats{}, nil
}

// ref takes a reference on group's counters; the caller holds p.mu.
func (p *Provider) refLocked(group string) *groupStats {
	st := p.stats[group]
	if st == nil {
		st = &groupStats{}
		p.stats[group] = st
	}
	st.refs++
	return st
}

func (p *Provider) unref(group string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats[group]
	if st == nil {
		return
	}
	st.refs--
	if st.refs == 0 && st.Joins == 0 {
		delete(p.stats, group)
	}
}

func (p *Provider) count(group string, f func(*view.Stats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.stats[group]; st != nil {
		f(&st.Stats)
	}
}

// installed counts v as installed when it is newer than every view of its
// group this instance saw.
func (p *Provider) installed(v *view.View) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.stats[v.Group]; st != nil && st.last.Less(v.ID) {
		st.last = v.ID
		st.Views++
	}
}

// epoch returns the keyspace's epoch, creating it from the wall clock when
// the keyspace has none.
func (p *Provider) createEpoch(ctx context.Context) error {
	key := p.keys.epoch()
	epoch := max(time.Now().UnixNano(), 1)
	_, err := p.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.FormatInt(epoch, 10))).
		Commit()
	return etcdError("create the view epoch in etcd", err)
}

func parseEpoch(b []byte) (uint64, error) {
	e, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil || e == 0 {
		return 0, status.Errorf(codes.DataLoss, "the view epoch in etcd is %q, not a positive number", b)
	}
	return e, nil
}

// follower is a group as a reader in this provider follows it.
type follower struct {
	p       *Provider
	group   string
	epoch   uint64
	members map[string]view.Member
	// rev is the revision of the last change to the group's members; zero
	// for a group nobody ever joined.
	rev int64
}

func (f *follower) view() *view.View {
	v := &view.View{Group: f.group}
	if f.rev > 0 {
		v.ID = view.ID{Epoch: f.epoch, Seq: uint64(f.rev)}
	}
	v.Members = make([]view.Member, 0, len(f.members))
	for _, m := range f.members {
		v.Members = append(v.Members, m)
	}
	slices.SortFunc(v.Members, func(a, b view.Member) int {
		switch {
		case a.Incarnation < b.Incarnation:
			return -1
		case a.Incarnation > b.Incarnation:
			return 1
		}
		return 0
	})
	if len(v.Members) == 0 {
		v.Members = nil
	}
	return v
}

// apply applies one event to the group; malformed keys and values, which
// the provider does not write, are logged and skipped.
func (f *follower) apply(ev *clientv3.Event) {
	f.rev = max(f.rev, ev.Kv.ModRevision)
	id, err := f.p.keys.memberID(f.group, ev.Kv.Key, f.p.opts.limits)
	if err != nil {
		f.p.opts.log.WithFields(logrus.Fields{"group": f.group}).WithError(err).Warn("skipping a malformed member key in etcd")
		return
	}
	if ev.Type == clientv3.EventTypeDelete {
		delete(f.members, id)
		return
	}
	m, err := decodeMember(id, ev.Kv.Value, ev.Kv.CreateRevision, f.p.opts.limits)
	if err != nil {
		delete(f.members, id)
		f.p.opts.log.WithFields(logrus.Fields{"group": f.group, "member": id}).WithError(err).Warn("skipping a malformed member in etcd")
		return
	}
	f.members[id] = m
}

// decodeMember decodes the value of member id's key; its incarnation is
// the key's create revision.
func decodeMember(id string, value []byte, createRevision int64, l view.Limits) (view.Member, error) {
	if createRevision <= 0 {
		return view.Member{}, status.Errorf(codes.InvalidArgument, "member %q has create revision %d", id, createRevision)
	}
	m, err := wire.UnmarshalMember(value, l)
	if err != nil {
		return view.Member{}, err
	}
	if m.ID != id {
		return view.Member{}, status.Errorf(codes.InvalidArgument, "the value of member %q names member %q", id, m.ID)
	}
	m.Incarnation = uint64(createRevision)
	return m, nil
}

// open reads group and starts the etcd watch that follows it from the
// revision of the group's last change; it returns once the follower has
// caught up with the read, with the watch to go on with. cancel ends the
// watch.
func (p *Provider) open(ctx context.Context, group string) (f *follower, wch clientv3.WatchChan, cancel context.CancelFunc, err error) {
	var resp *clientv3.TxnResponse
	for attempt := 0; ; attempt++ {
		resp, err = p.c.Txn(ctx).Then(
			clientv3.OpGet(p.keys.epoch()),
			clientv3.OpGet(p.keys.group(group)),
			clientv3.OpGet(p.keys.members(group), clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return nil, nil, nil, etcdError("read group "+group+" from etcd", err)
		}
		if len(resp.Responses[0].GetResponseRange().Kvs) > 0 || attempt > 0 {
			break
		}
		if err := p.createEpoch(ctx); err != nil {
			return nil, nil, nil, err
		}
	}
	epochKVs := resp.Responses[0].GetResponseRange().Kvs
	if len(epochKVs) == 0 {
		return nil, nil, nil, status.Error(codes.DataLoss, "the view epoch vanished from etcd")
	}
	epoch, err := parseEpoch(epochKVs[0].Value)
	if err != nil {
		return nil, nil, nil, err
	}
	read := resp.Header.Revision
	f = &follower{p: p, group: group, epoch: epoch, members: map[string]view.Member{}}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		f.rev = max(f.rev, kv.ModRevision)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		f.apply(&clientv3.Event{Type: clientv3.EventTypePut, Kv: kv})
	}
	known := f.rev > 0
	// A watch of its own: a progress request goes to every watch of a
	// stream, and answers only when they have all caught up.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wctx = metadata.AppendToOutgoingContext(wctx, "tether-view-watch", strconv.FormatInt(watchCount.Add(1), 10))
	start := read + 1
	if known {
		start = f.rev + 1
	}
	watch := func(from int64) clientv3.WatchChan {
		return p.c.Watch(wctx, p.keys.members(group), clientv3.WithPrefix(), clientv3.WithRev(from))
	}
	wch = watch(start)
	if start > read {
		return f, wch, cancel, nil
	}
	// Replay the expiries between the group key's last change and the read.
	tick := time.NewTicker(p.opts.progress)
	defer tick.Stop()
	requestProgress := func() {
		if err := p.c.RequestProgress(wctx); err != nil && wctx.Err() == nil {
			p.opts.log.WithError(err).Debug("etcd progress request failed")
		}
	}
	requestProgress()
	for {
		select {
		case <-tick.C:
			requestProgress()
		case wr, ok := <-wch:
			if !ok {
				cancel()
				return nil, nil, nil, etcdError("watch group "+group+" in etcd", context.Cause(wctx))
			}
			if wr.CompactRevision > 0 {
				if wr.CompactRevision > read+1 {
					cancel()
					return nil, nil, nil, status.Errorf(codes.Unavailable, "etcd compacted group %s past the revision it was read at; read it again", group)
				}
				// The history is gone: the last change was at the latest
				// just before the compaction point.
				f.rev = max(f.rev, wr.CompactRevision-1)
				wch = watch(wr.CompactRevision)
				continue
			}
			if err := wr.Err(); err != nil {
				cancel()
				return nil, nil, nil, etcdError("watch group "+group+" in etcd", err)
			}
			if wr.IsProgressNotify() {
				if wr.Header.Revision >= read {
					return f, wch, cancel, nil
				}
				continue
			}
			past := false
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision <= read {
					// Already in the read: only its revision is news.
					f.rev = max(f.rev, ev.Kv.ModRevision)
					continue
				}
				f.apply(ev)
				past = true
			}
			if past {
				return f, wch, cancel, nil
			}
		}
	}
}

// View implements view.Provider.
func (p *Provider) View(ctx context.Context, group string) (view.View, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return view.View{}, err
	}
	if p.isClosed() {
		return view.View{}, errClosed
	}
	f, _, cancel, err := p.open(ctx, group)
	if err != nil {
		return view.View{}, err
	}
	cancel()
	v := f.view()
	v.Joined = v.Members
	return *v, nil
}

func (p *Provider) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Watch implements view.Provider. The watch ends with an error when its etcd
// watch does (etcd unreachable, history compacted past it): resume it with
// the last view received.
func (p *Provider) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return nil, err
	}
	// The watch ends with ctx, Close of the watcher or Close of the
	// provider.
	wctx, stop := context.WithCancel(ctx)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		stop()
		return nil, errClosed
	}
	p.refLocked(group)
	p.watches[&stop] = struct{}{}
	p.mu.Unlock()
	fd := feed.New(wctx, after, func(*feed.Feed) {
		stop()
		p.mu.Lock()
		delete(p.watches, &stop)
		p.mu.Unlock()
		p.unref(group)
	})
	f, wch, cancel, err := p.open(wctx, group)
	if err != nil {
		fd.Close()
		return nil, err
	}
	publish := func(v *view.View) {
		p.installed(v)
		fd.Publish(v)
	}
	publish(f.view())
	p.mu.Lock()
	ok := p.spawnLocked(func() {
		defer cancel()
		for {
			wr, ok := <-wch
			if !ok {
				fd.Fail(etcdError("watch group "+group+" in etcd", context.Cause(wctx)))
				return
			}
			if err := wr.Err(); err != nil {
				fd.Fail(etcdError("watch group "+group+" in etcd", err))
				return
			}
			// One view per revision: a response may carry several.
			for i, ev := range wr.Events {
				f.apply(ev)
				if i == len(wr.Events)-1 || wr.Events[i+1].Kv.ModRevision != ev.Kv.ModRevision {
					publish(f.view())
				}
			}
		}
	})
	p.mu.Unlock()
	if !ok {
		cancel()
		fd.Close()
		return nil, errClosed
	}
	return fd, nil
}

// Join implements view.Provider.
func (p *Provider) Join(ctx context.Context, group string, m view.Member) (view.Membership, error) {
	if err := p.opts.limits.CheckGroup(group); err != nil {
		return nil, err
	}
	if err := p.opts.limits.CheckMember(m); err != nil {
		return nil, err
	}
	if p.isClosed() {
		return nil, errClosed
	}
	m = m.Clone()
	m.Incarnation = 0
	value, err := wire.MarshalMember(m)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode member %q: %v", m.ID, err)
	}
	lease, err := p.c.Grant(ctx, int64(p.opts.ttl/time.Second))
	if err != nil {
		return nil, etcdError("grant a lease in etcd", err)
	}
	key := p.keys.member(group, m.ID)
	resp, err := p.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(
			clientv3.OpPut(key, string(value), clientv3.WithLease(lease.ID)),
			clientv3.OpPut(p.keys.group(group), ""),
		).
		Else(clientv3.OpGet(key)).
		Commit()
	if err == nil && !resp.Succeeded {
		err = status.Errorf(codes.AlreadyExists, "member %q of group %q is held by a live member", m.ID, group)
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			err = status.Errorf(codes.AlreadyExists, "member %q of group %q is held by a live member (incarnation %d)", m.ID, group, kvs[0].CreateRevision)
		}
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.timeout)
		defer cancel()
		if _, rerr := p.c.Revoke(rctx, lease.ID); rerr != nil {
			p.opts.log.WithError(rerr).WithField("group", group).Warn("could not revoke the lease of a refused join")
		}
		if status.Code(err) == codes.AlreadyExists {
			return nil, err
		}
		return nil, etcdError("join group "+group+" in etcd", err)
	}
	m.Incarnation = uint64(resp.Header.Revision)
	ms := &membership{
		p:     p,
		group: group,
		m:     m,
		key:   key,
		lease: lease.ID,
		done:  make(chan struct{}),
		log:   p.opts.log.WithFields(logrus.Fields{"group": group, "member": m.ID}),
	}
	ms.ctx, ms.cancel = context.WithCancel(p.ctx)
	p.mu.Lock()
	st := p.refLocked(group)
	st.Joins++
	p.memberships[ms] = struct{}{}
	started := p.spawnLocked(ms.run)
	p.mu.Unlock()
	if !started {
		_ = ms.shutdown(context.WithoutCancel(ctx), errClosed)
		return nil, errClosed
	}
	ms.log.WithFields(logrus.Fields{"incarnation": m.Incarnation}).Info("member joined")
	return ms, nil
}

// Ensure the interface is met.
var _ view.Provider = (*Provider)(nil)

func (p *Provider) forget(ms *membership) {
	p.mu.Lock()
	delete(p.memberships, ms)
	p.mu.Unlock()
	p.unref(ms.group)
}
