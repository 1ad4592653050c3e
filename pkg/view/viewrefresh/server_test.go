package viewrefresh_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/clienturl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

func TestMain(m *testing.M) {
	// The tests move connections to empty groups on purpose: no warnings.
	logrus.SetLevel(logrus.ErrorLevel)
	goleak.VerifyTestMain(m)
}

// hop is what the element sent down the chain for one call.
type hop struct {
	conn   string
	member string
	url    string
	view   string
	close  bool
}

// tail ends the chain: it records every call, and fails the requests its
// fail function picks.
type tail struct {
	mu    sync.Mutex
	hops  []hop
	calls chan hop
	fail  func(req *networkservice.NetworkServiceRequest) error
}

func newTail() *tail {
	return &tail{calls: make(chan hop, 1024)}
}

func (t *tail) record(ctx context.Context, conn *networkservice.Connection, closing bool) {
	h := hop{conn: conn.GetId(), member: conn.GetNetworkServiceEndpointName(), view: conn.GetContext().GetExtraContext()[viewrefresh.ViewIDKey], close: closing}
	if u := clienturl.ClientURL(ctx); u != nil {
		h.url = u.String()
	}
	t.mu.Lock()
	t.hops = append(t.hops, h)
	t.mu.Unlock()
	t.calls <- h
}

func (t *tail) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	t.record(ctx, req.GetConnection(), false)
	t.mu.Lock()
	fail := t.fail
	t.mu.Unlock()
	if fail != nil {
		if err := fail(req); err != nil {
			return nil, err
		}
	}
	return req.GetConnection(), nil
}

func (t *tail) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	t.record(ctx, conn, true)
	return &emptypb.Empty{}, nil
}

// wait returns the next call for connection id.
func (t *tail) wait(tb testing.TB, id string) hop {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case h := <-t.calls:
			if h.conn == id {
				return h
			}
		case <-deadline:
			tb.Fatalf("no call for %s", id)
		}
	}
}

func (t *tail) drain() {
	for {
		select {
		case <-t.calls:
		default:
			return
		}
	}
}

// syncProvider tells when the element has installed a view: the element
// installs a view before it asks its watcher for the next one.
type syncProvider struct {
	view.Provider
	mu        sync.Mutex
	installed view.ID
	changed   chan struct{}
}

func newSyncProvider(p view.Provider) *syncProvider {
	return &syncProvider{Provider: p, changed: make(chan struct{})}
}

func (s *syncProvider) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	w, err := s.Provider.Watch(ctx, group, after)
	if err != nil {
		return nil, err
	}
	return &syncWatcher{Watcher: w, s: s}, nil
}

type syncWatcher struct {
	view.Watcher
	s    *syncProvider
	last view.ID
}

func (w *syncWatcher) Next(ctx context.Context) (view.View, error) {
	w.s.mu.Lock()
	if w.s.installed.Less(w.last) {
		w.s.installed = w.last
		close(w.s.changed)
		w.s.changed = make(chan struct{})
	}
	w.s.mu.Unlock()
	v, err := w.Watcher.Next(ctx)
	w.last = v.ID
	return v, err
}

// wait returns once the element installed a view at least id.
func (s *syncProvider) wait(tb testing.TB, id view.ID) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		done, changed := !s.installed.Less(id), s.changed
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("the element did not install view %v", id)
		}
	}
}

type fixture struct {
	sync *syncProvider
	p    *embedded.Provider
	srv  networkservice.NetworkServiceServer
	tail *tail
	ms   map[string]view.Membership
}

func newFixture(t *testing.T, members []string, opts ...viewrefresh.Option) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := embedded.New()
	f := &fixture{sync: newSyncProvider(p), p: p, tail: newTail(), ms: map[string]view.Membership{}}
	t.Cleanup(func() {
		cancel()
		_ = p.Close()
	})
	// No warm-up unless a test asks for one (TestWarmup).
	opts = append([]viewrefresh.Option{viewrefresh.WithWarmup(0)}, opts...)
	f.srv = chain.NewServer(viewrefresh.NewServer(ctx, f.sync, opts...), chain.Tail(f.tail))
	for _, id := range members {
		f.join(t, id, nil)
	}
	return f
}

func (f *fixture) join(t *testing.T, id string, labels map[string]string) view.Membership {
	t.Helper()
	ms, err := f.p.Join(t.Context(), "g", view.Member{ID: id, Labels: labels, Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/" + id + ".sock"}})
	if err != nil {
		t.Fatal(err)
	}
	f.ms[id] = ms
	return ms
}

func (f *fixture) leave(t *testing.T, id string) {
	t.Helper()
	if err := f.ms[id].Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func request(id string, labels map[string]string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id, NetworkService: "g", Labels: labels}}
}

func (f *fixture) request(t *testing.T, req *networkservice.NetworkServiceRequest) *networkservice.Connection {
	t.Helper()
	conn, err := f.srv.Request(t.Context(), req)
	if err != nil {
		t.Fatalf("request %s: %v", req.GetConnection().GetId(), err)
	}
	return conn
}

func TestPolicies(t *testing.T) {
	t.Parallel()
	members := []string{"m0", "m1", "m2"}
	tests := []struct {
		name   string
		policy viewrefresh.Policy
		labels map[string]string
		check  func(t *testing.T, counts map[string]int)
	}{
		{"primary", viewrefresh.Primary, nil, func(t *testing.T, counts map[string]int) {
			if counts["m0"] != 30 {
				t.Fatalf("primary spread connections: %v", counts)
			}
		}},
		{"rendezvous", viewrefresh.Rendezvous, nil, func(t *testing.T, counts map[string]int) {
			for _, m := range members {
				if counts[m] < 3 {
					t.Fatalf("rendezvous left a member nearly empty: %v", counts)
				}
			}
		}},
		{"least connections", viewrefresh.LeastConnections, nil, func(t *testing.T, counts map[string]int) {
			for _, m := range members {
				if counts[m] != 10 {
					t.Fatalf("least connections did not balance: %v", counts)
				}
			}
		}},
		{"selector with primary", viewrefresh.Primary, map[string]string{viewrefresh.SelectorLabel: "zone=b"}, func(t *testing.T, counts map[string]int) {
			if counts["m1"] != 30 {
				t.Fatalf("the selector was not applied: %v", counts)
			}
		}},
		{"selector with least connections", viewrefresh.LeastConnections, map[string]string{viewrefresh.SelectorLabel: " role = replica "}, func(t *testing.T, counts map[string]int) {
			if counts["m1"] != 15 || counts["m2"] != 15 {
				t.Fatalf("the selector was not applied: %v", counts)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil, viewrefresh.WithPolicy(tt.policy))
			f.join(t, "m0", map[string]string{"zone": "a", "role": "primary"})
			f.join(t, "m1", map[string]string{"zone": "b", "role": "replica"})
			f.join(t, "m2", map[string]string{"zone": "c", "role": "replica"})
			counts := map[string]int{}
			for i := range 30 {
				conn := f.request(t, request(fmt.Sprint("c", i), tt.labels))
				counts[conn.GetNetworkServiceEndpointName()]++
				h := f.tail.wait(t, conn.GetId())
				if h.url != "unix:///run/"+h.member+".sock" || h.member != conn.GetNetworkServiceEndpointName() {
					t.Fatalf("sent %+v for a connection to %s", h, conn.GetNetworkServiceEndpointName())
				}
			}
			tt.check(t, counts)
		})
	}
}

// TestRendezvousIsStable: two elements, as on two forwarders, route a
// connection ID to the same member, and a member's departure moves only its
// own connections.
func TestRendezvousIsStable(t *testing.T) {
	t.Parallel()
	a := newFixture(t, []string{"m0", "m1", "m2", "m3"}, viewrefresh.WithPolicy(viewrefresh.Rendezvous))
	b := newFixture(t, []string{"m3", "m2", "m1", "m0"}, viewrefresh.WithPolicy(viewrefresh.Rendezvous))
	before := map[string]string{}
	for i := range 40 {
		id := fmt.Sprint("c", i)
		ma := a.request(t, request(id, nil)).GetNetworkServiceEndpointName()
		mb := b.request(t, request(id, nil)).GetNetworkServiceEndpointName()
		if ma != mb {
			t.Fatalf("connection %s went to %s and %s", id, ma, mb)
		}
		before[id] = ma
	}
	a.tail.drain()
	a.leave(t, "m2")
	moved := 0
	for _, m := range before {
		if m == "m2" {
			moved++
		}
	}
	for range moved {
		h := <-a.tail.calls
		if before[h.conn] != "m2" || h.member == "m2" {
			t.Fatalf("moved %+v, which was on %s", h, before[h.conn])
		}
	}
	// The others stay: a refresh keeps them where they were.
	for id, m := range before {
		if m == "m2" {
			continue
		}
		if got := a.request(t, request(id, nil)); got.GetNetworkServiceEndpointName() != m {
			t.Fatalf("a healthy connection moved from %s to %s", m, got.GetNetworkServiceEndpointName())
		}
	}
}

func TestStickyAndRecorded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, []string{"m0", "m1"}, viewrefresh.WithPolicy(viewrefresh.LeastConnections))
	c0 := f.request(t, request("c0", nil))
	c1 := f.request(t, request("c1", nil))
	if c0.GetNetworkServiceEndpointName() == c1.GetNetworkServiceEndpointName() {
		t.Fatal("least connections put both on one member")
	}
	v, _ := f.p.View(t.Context(), "g")
	if got := c0.GetContext().GetExtraContext()[viewrefresh.ViewIDKey]; got != v.ID.String() {
		t.Fatalf("view recorded %q, want %q", got, v.ID)
	}
	// A new member and a new view: refreshes stay where they are and record
	// the new view.
	f.join(t, "m2", nil)
	v, _ = f.p.View(t.Context(), "g")
	f.sync.wait(t, v.ID)
	conn := f.request(t, &networkservice.NetworkServiceRequest{Connection: c0.Clone()})
	if conn.GetNetworkServiceEndpointName() != c0.GetNetworkServiceEndpointName() {
		t.Fatalf("a refresh moved a healthy connection from %s to %s", c0.GetNetworkServiceEndpointName(), conn.GetNetworkServiceEndpointName())
	}
	if got := conn.GetContext().GetExtraContext()[viewrefresh.ViewIDKey]; got != v.ID.String() {
		t.Fatalf("a refresh recorded view %s, want %s", got, v.ID)
	}
	// A request naming a member pins it; an unknown or empty name selects
	// anew.
	req := request("pinned", nil)
	req.Connection.NetworkServiceEndpointName = "m1"
	if got := f.request(t, req).GetNetworkServiceEndpointName(); got != "m1" {
		t.Fatalf("pinned to m1, went to %s", got)
	}
	req = request("unknown", nil)
	req.Connection.NetworkServiceEndpointName = "gone"
	if got := f.request(t, req).GetNetworkServiceEndpointName(); got == "gone" || got == "" {
		t.Fatalf("an unknown member was kept: %q", got)
	}
	// A selector the current member no longer matches moves it.
	f2 := newFixture(t, nil)
	f2.join(t, "a", map[string]string{"zone": "a"})
	f2.join(t, "b", map[string]string{"zone": "b"})
	conn = f2.request(t, request("c", nil))
	if conn.GetNetworkServiceEndpointName() != "a" {
		t.Fatal(conn)
	}
	conn.Labels = map[string]string{viewrefresh.SelectorLabel: "zone=b"}
	if got := f2.request(t, &networkservice.NetworkServiceRequest{Connection: conn}); got.GetNetworkServiceEndpointName() != "b" {
		t.Fatalf("a refresh with a new selector stayed on %s", got.GetNetworkServiceEndpointName())
	}
}

// TestReselectOnDeparture: when a member leaves, its connections are moved
// at once through the chain, with the member cleared, and the others stay.
func TestReselectOnDeparture(t *testing.T) {
	t.Parallel()
	f := newFixture(t, []string{"m0", "m1", "m2"}, viewrefresh.WithPolicy(viewrefresh.LeastConnections))
	on := map[string]string{}
	for i := range 9 {
		conn := f.request(t, request(fmt.Sprint("c", i), nil))
		on[conn.GetId()] = conn.GetNetworkServiceEndpointName()
	}
	f.tail.drain()
	f.leave(t, "m1")
	for range 3 {
		h := <-f.tail.calls
		if on[h.conn] != "m1" {
			t.Fatalf("%s on %s was moved", h.conn, on[h.conn])
		}
		if h.member == "m1" || h.member == "" || h.url != "unix:///run/"+h.member+".sock" {
			t.Fatalf("moved to %+v", h)
		}
		on[h.conn] = h.member
	}
	select {
	case h := <-f.tail.calls:
		t.Fatalf("an extra call %+v", h)
	case <-time.After(50 * time.Millisecond):
	}
	// The moved connections now count for their new members.
	counts := map[string]int{}
	for _, m := range on {
		counts[m]++
	}
	if counts["m0"]+counts["m2"] != 9 {
		t.Fatalf("after the move: %v", counts)
	}
	// The last member leaves: nothing to move to, the connection stays.
	f.leave(t, "m0")
	f.leave(t, "m2")
	v, _ := f.p.View(t.Context(), "g")
	f.sync.wait(t, v.ID)
	conn := request("late", nil)
	if _, err := f.srv.Request(t.Context(), conn); status.Code(err) != codes.Unavailable || !contains(err, `group "g"`) {
		t.Fatalf("a request to an empty group: %v", err)
	}
	// The connections could not move to an empty group; they move when a
	// member comes back.
	f.tail.drain()
	f.join(t, "m3", nil)
	moved := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(moved) < 9 {
		select {
		case h := <-f.tail.calls:
			if h.member == "m3" { // not a failed move from before
				moved[h.conn] = true
			}
		case <-deadline:
			t.Fatalf("moved %d connections to the new member, want 9", len(moved))
		}
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(status.Convert(err).Message(), s)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, []string{"m0"})
	tests := []struct {
		name string
		req  *networkservice.NetworkServiceRequest
		code codes.Code
		say  string
	}{
		{"no group", &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "a"}}, codes.InvalidArgument, "names no group"},
		{"unknown group", &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "b", NetworkService: "nobody"}}, codes.Unavailable, `group "nobody"`},
		{"malformed selector", request("c", map[string]string{viewrefresh.SelectorLabel: "zone"}), codes.InvalidArgument, "key=value"},
		{"selector matches nobody", request("d", map[string]string{viewrefresh.SelectorLabel: "zone=x"}), codes.Unavailable, `selector "zone=x"`},
	}
	for _, tt := range tests {
		_, err := f.srv.Request(t.Context(), tt.req)
		if status.Code(err) != tt.code || !contains(err, tt.say) {
			t.Errorf("%s: %v, want %v saying %q", tt.name, err, tt.code, tt.say)
		}
	}
	if n := f.srv.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("%d connections after refused requests", n)
	}
}

func TestDownstreamFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t, []string{"m0", "m1"}, viewrefresh.WithPolicy(viewrefresh.LeastConnections))
	boom := status.Error(codes.Unavailable, "member unreachable")
	f.tail.fail = func(*networkservice.NetworkServiceRequest) error { return boom }
	if _, err := f.srv.Request(t.Context(), request("c", nil)); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	f.tail.mu.Lock()
	f.tail.fail = nil
	f.tail.mu.Unlock()
	// Nothing was counted for the failed connection: least connections
	// still sees two empty members and picks the lower rank.
	if got := f.request(t, request("d", nil)).GetNetworkServiceEndpointName(); got != "m0" {
		t.Fatalf("after a failed request the next went to %s", got)
	}
}

func TestCloseSendsToTheMember(t *testing.T) {
	t.Parallel()
	f := newFixture(t, []string{"m0"})
	conn := f.request(t, request("c", nil))
	f.tail.wait(t, "c")
	if _, err := f.srv.Close(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	if h := f.tail.wait(t, "c"); !h.close || h.url != "unix:///run/m0.sock" {
		t.Fatalf("close went %+v", h)
	}
	// A close of a connection the element never routed passes through.
	if _, err := f.srv.Close(t.Context(), &networkservice.Connection{Id: "never"}); err != nil {
		t.Fatal(err)
	}
	if h := f.tail.wait(t, "never"); !h.close || h.url != "" {
		t.Fatalf("close went %+v", h)
	}
}

func TestMembersWithoutEndpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for id, ep := range map[string]string{"none": "", "http": "http://x:1", "tcpnoport": "tcp://host", "unixhost": "unix://host/p"} {
		if _, err := f.p.Join(t.Context(), "g", view.Member{ID: id, Endpoints: map[string]string{view.EndpointGRPC: ep}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.srv.Request(t.Context(), request("c", nil)); status.Code(err) != codes.Unavailable {
		t.Fatalf("routed to a member without an endpoint: %v", err)
	}
	// The refused request left the group unfollowed: the next one reads a
	// fresh view.
	f.join(t, "ok", nil)
	if got := f.request(t, request("c", nil)).GetNetworkServiceEndpointName(); got != "ok" {
		t.Fatalf("routed to %q", got)
	}
}

// countingProvider counts the calls the element makes.
type countingProvider struct {
	view.Provider
	mu           sync.Mutex
	views, watch int
}

func (c *countingProvider) View(ctx context.Context, group string) (view.View, error) {
	c.mu.Lock()
	c.views++
	c.mu.Unlock()
	return c.Provider.View(ctx, group)
}

func (c *countingProvider) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	c.mu.Lock()
	c.watch++
	c.mu.Unlock()
	return c.Provider.Watch(ctx, group, after)
}

// TestRequestPathDoesNotCallTheProvider: one watch per followed group, and
// no provider call on the Request path once the group is followed.
func TestRequestPathDoesNotCallTheProvider(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()
	if _, err := p.Join(ctx, "g", view.Member{ID: "m", Endpoints: map[string]string{view.EndpointGRPC: "unix:///m"}}); err != nil {
		t.Fatal(err)
	}
	cp := &countingProvider{Provider: p}
	srv := chain.NewServer(viewrefresh.NewServer(ctx, cp), chain.Tail(newTail()))
	conns := []*networkservice.Connection{}
	for i := range 20 {
		conn, err := srv.Request(ctx, request(fmt.Sprint("c", i), nil))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		if _, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
			t.Fatal(err)
		}
	}
	cp.mu.Lock()
	views, watches := cp.views, cp.watch
	cp.mu.Unlock()
	if views != 0 || watches != 1 {
		t.Fatalf("40 requests called View %d times and Watch %d times, want 0 and 1", views, watches)
	}
	for _, conn := range conns {
		if _, err := srv.Close(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWarmup(t *testing.T) {
	f := newFixture(t, []string{"m1", "m2"}, viewrefresh.WithWarmup(time.Hour))
	ctx := context.Background()
	// A connection this forwarder does not know, naming a member that is
	// not in the view: probably still joining after a restart. It waits.
	req := request("from-before", nil)
	req.Connection.NetworkServiceEndpointName = "m3"
	if _, err := f.srv.Request(ctx, req); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not in the view yet") {
		t.Fatalf("got %v, want Unavailable while warming up", err)
	}
	if n := f.srv.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("a refused request left %d connections", n)
	}
	// A member that is in the view is used at once, and a reselect (no
	// member) never waits.
	req = request("pinned", nil)
	req.Connection.NetworkServiceEndpointName = "m2"
	if got := f.request(t, req).GetNetworkServiceEndpointName(); got != "m2" {
		t.Fatalf("pinned to m2, went to %s", got)
	}
	if got := f.request(t, request("reselect", nil)).GetNetworkServiceEndpointName(); got == "" {
		t.Fatal("a reselect was not routed")
	}
}
