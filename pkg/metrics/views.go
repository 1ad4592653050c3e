package metrics

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-mesh/tether/pkg/view"
)

// Views reports the groups a process follows:
//
//	tether_view_members{group}                      members of the group's current view
//	tether_view_installed_total{group}              views installed, as the provider counts them
//	tether_view_member_events_total{group, event}   joins, leaves, expiries and failures, likewise
//
// A group is reported while it is tracked: while a watch made through
// Provider is open (view refresh watches every group that has connections)
// or between Track and its release. The counters are the provider's
// (view.Stats): the embedded provider counts since it created the group, and
// starts again when a group emptied of members and watchers is recreated;
// the etcd provider counts what this process saw. Prometheus treats both as
// counters that may reset.
type Views struct {
	p       view.Provider
	timeout time.Duration

	members *prometheus.Desc
	views   *prometheus.Desc
	events  *prometheus.Desc

	mu     sync.Mutex
	groups map[string]*trackedGroup
}

type trackedGroup struct {
	refs int
	// last is the newest view a watch delivered, when one did.
	last    view.ID
	members int
	seen    bool
}

// ViewsOption configures NewViews.
type ViewsOption func(*Views)

// WithQueryTimeout bounds the provider calls of a scrape (default 2 s).
func WithQueryTimeout(d time.Duration) ViewsOption {
	return func(v *Views) {
		if d > 0 {
			v.timeout = d
		}
	}
}

// NewViews returns the view collector of provider p.
func NewViews(p view.Provider, opts ...ViewsOption) *Views {
	v := &Views{
		p:       p,
		timeout: 2 * time.Second,
		members: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "view", "members"),
			"Members in the current view of each group this process follows.", []string{"group"}, nil),
		views: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "view", "installed_total"),
			"Views installed in each group this process follows, as its view provider counts them.", []string{"group"}, nil),
		events: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "view", "member_events_total"),
			"Members that joined, left, expired (lease) or failed (connection broke) in each group this process follows.", []string{"group", "event"}, nil),
		groups: map[string]*trackedGroup{},
	}
	for _, o := range opts {
		o(v)
	}
	return v
}

// Track reports group until release is called; release is idempotent.
func (v *Views) Track(group string) (release func()) {
	v.mu.Lock()
	g := v.groups[group]
	if g == nil {
		g = &trackedGroup{}
		v.groups[group] = g
	}
	g.refs++
	v.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			v.mu.Lock()
			defer v.mu.Unlock()
			if g.refs--; g.refs == 0 && v.groups[group] == g {
				delete(v.groups, group)
			}
		})
	}
}

// Provider returns p wrapped so that every watch made through it tracks
// its group while it is open and records the views it delivers. Pass it
// where the process watches groups (the forwarder's view refresh).
func (v *Views) Provider() view.Provider {
	return &trackingProvider{Provider: v.p, v: v}
}

type trackingProvider struct {
	view.Provider
	v *Views
}

func (p *trackingProvider) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	w, err := p.Provider.Watch(ctx, group, after)
	if err != nil {
		return nil, err
	}
	return &trackingWatcher{Watcher: w, v: p.v, group: group, release: p.v.Track(group)}, nil
}

type trackingWatcher struct {
	view.Watcher
	v       *Views
	group   string
	release func()
}

func (w *trackingWatcher) Next(ctx context.Context) (view.View, error) {
	got, err := w.Watcher.Next(ctx)
	if err == nil {
		w.v.record(w.group, got)
	}
	return got, err
}

func (w *trackingWatcher) Close() {
	w.Watcher.Close()
	w.release()
}

func (v *Views) record(group string, got view.View) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if g := v.groups[group]; g != nil && (!g.seen || g.last.Less(got.ID)) {
		g.last, g.members, g.seen = got.ID, len(got.Members), true
	}
}

// Describe implements prometheus.Collector.
func (v *Views) Describe(ch chan<- *prometheus.Desc) {
	ch <- v.members
	ch <- v.views
	ch <- v.events
}

// Collect implements prometheus.Collector. It asks the provider for the
// counters of every tracked group, and for the view of a group no watch has
// delivered one of yet; a group the provider does not answer for within the
// query timeout is left out of this scrape.
func (v *Views) Collect(ch chan<- prometheus.Metric) {
	type entry struct {
		name    string
		members int
		seen    bool
	}
	v.mu.Lock()
	entries := make([]entry, 0, len(v.groups))
	for name, g := range v.groups {
		entries = append(entries, entry{name, g.members, g.seen})
	}
	v.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	for _, e := range entries {
		st, err := v.p.Stats(ctx, e.name)
		if err != nil {
			continue
		}
		if !e.seen {
			cur, err := v.p.View(ctx, e.name)
			if err != nil {
				continue
			}
			e.members = len(cur.Members)
		}
		ch <- prometheus.MustNewConstMetric(v.members, prometheus.GaugeValue, float64(e.members), e.name)
		ch <- prometheus.MustNewConstMetric(v.views, prometheus.CounterValue, float64(st.Views), e.name)
		for _, ev := range []struct {
			name string
			n    uint64
		}{{"join", st.Joins}, {"leave", st.Leaves}, {"expiry", st.Expiries}, {"failure", st.Failures}} {
			ch <- prometheus.MustNewConstMetric(v.events, prometheus.CounterValue, float64(ev.n), e.name, ev.name)
		}
	}
}
