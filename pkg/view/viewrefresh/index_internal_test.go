package viewrefresh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
)

// indexSize returns how many groups the element follows and how many index
// entries it holds.
func (s *server) indexSize() (groups, entries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.groups {
		for _, conns := range g.conns {
			entries += len(conns)
		}
	}
	return len(s.groups), entries
}

// checkIndex verifies that the index holds exactly the connections in
// want (connection ID -> member ID).
func (s *server) checkIndex(t *testing.T, group string, want map[string]string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[group]
	got := map[string]string{}
	if g != nil {
		for member, conns := range g.conns {
			if len(conns) == 0 {
				t.Errorf("an empty index entry for %s", member)
			}
			for id := range conns {
				got[id] = member
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("index %v, want %v", got, want)
	}
}

type okTail struct{}

func (okTail) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return req.GetConnection(), nil
}

func (okTail) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func endpoint(id string) map[string]string {
	return map[string]string{view.EndpointGRPC: "unix:///run/" + id + ".sock"}
}

// TestIndexChurn routes connections, refreshes, moves and closes them while
// members come and go, concurrently, and then checks that the index holds
// exactly the open connections, and nothing once they are all closed.
func TestIndexChurn(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()
	el := NewServer(ctx, p, WithPolicy(LeastConnections)).(*server)
	installed := newInstalled()
	el.onInstall = installed.record
	srv := chain.NewServer(el, chain.Tail(okTail{}))
	stable, _ := p.Join(ctx, "g", view.Member{ID: "stable", Endpoints: endpoint("stable")})
	defer func() { _ = stable.Leave(ctx) }()

	var wg sync.WaitGroup
	// Members churn.
	wg.Go(func() {
		for i := range 20 {
			ms, err := p.Join(ctx, "g", view.Member{ID: fmt.Sprint("churn", i%3), Endpoints: endpoint("churn")})
			if err != nil {
				continue
			}
			_ = ms.Leave(ctx)
		}
	})
	var mu sync.Mutex
	open := map[string]*networkservice.Connection{}
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 50 {
				id := fmt.Sprintf("w%d-c%d", w, rng.IntN(8))
				mu.Lock()
				conn := open[id]
				mu.Unlock()
				switch {
				case conn != nil && rng.IntN(3) == 0:
					if _, err := srv.Close(ctx, conn); err != nil {
						t.Error(err)
					}
					mu.Lock()
					delete(open, id)
					mu.Unlock()
				default:
					req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id, NetworkService: "g"}}
					if conn != nil {
						req.Connection = conn.Clone()
						if i%5 == 0 {
							req.Connection.NetworkServiceEndpointName = "" // reselect
						}
					}
					got, err := srv.Request(ctx, req)
					if err != nil {
						t.Error(err)
						continue
					}
					mu.Lock()
					open[id] = got.Clone()
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	// Wait until the element installed the last view and moved every
	// connection of the members it removed.
	final, err := p.View(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	installed.wait(t, final.ID)
	el.moving.Wait()
	want := map[string]string{}
	for id, conn := range open {
		got, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := final.Member(got.GetNetworkServiceEndpointName()); !ok {
			t.Fatalf("%s is routed to %s, not in the final view", id, got.GetNetworkServiceEndpointName())
		}
		want[id] = got.GetNetworkServiceEndpointName()
	}
	el.checkIndex(t, "g", want)
	for _, conn := range open {
		if _, err := srv.Close(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	if groups, entries := el.indexSize(); groups != 0 || entries != 0 {
		t.Fatalf("after every close: %d groups, %d index entries", groups, entries)
	}
}

// installed records the views the element installed.
type installed struct {
	mu      sync.Mutex
	last    view.ID
	changed chan struct{}
}

func newInstalled() *installed {
	return &installed{changed: make(chan struct{})}
}

func (i *installed) record(_ string, id view.ID) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.last = id
	close(i.changed)
	i.changed = make(chan struct{})
}

func (i *installed) wait(t *testing.T, id view.ID) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		i.mu.Lock()
		done, changed := !i.last.Less(id), i.changed
		i.mu.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the element did not install view %v", id)
		}
	}
}

// gateTail blocks the first request of a connection until the test opens
// the gate, and reports every request it sees.
type gateTail struct {
	okTail
	entered chan struct{}
	gate    chan struct{}
	first   sync.Once
	seen    chan *networkservice.Connection
}

func (g *gateTail) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	g.first.Do(func() {
		if g.entered != nil {
			close(g.entered)
		}
		<-g.gate
	})
	g.seen <- req.GetConnection().Clone()
	return req.GetConnection(), nil
}

// TestDepartureDuringRequest: a member leaves while a request routed to it
// is still on its way down the chain. The index learns of the connection
// only once the request succeeded, so the element checks the view then, and
// moves the connection at once.
func TestDepartureDuringRequest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()
	el := NewServer(ctx, p).(*server)
	installed := newInstalled()
	el.onInstall = installed.record
	tail := &gateTail{entered: make(chan struct{}), gate: make(chan struct{}), seen: make(chan *networkservice.Connection, 16)}
	srv := chain.NewServer(el, chain.Tail(tail))
	primary, _ := p.Join(ctx, "g", view.Member{ID: "primary", Endpoints: endpoint("primary")})
	backup, _ := p.Join(ctx, "g", view.Member{ID: "backup", Endpoints: endpoint("backup")})
	defer func() { _ = backup.Leave(ctx) }()

	done := make(chan error, 1)
	go func() {
		_, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "g"}})
		done <- err
	}()
	// The request is held in the tail; its member leaves meanwhile.
	<-tail.entered
	if err := primary.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	v, _ := p.View(ctx, "g")
	installed.wait(t, v.ID)
	close(tail.gate)
	if first := <-tail.seen; first.GetNetworkServiceEndpointName() != "primary" {
		t.Fatalf("the held request went to %s", first.GetNetworkServiceEndpointName())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case moved := <-tail.seen:
		if moved.GetNetworkServiceEndpointName() != "backup" {
			t.Fatalf("moved to %s", moved.GetNetworkServiceEndpointName())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not moved off the departed member")
	}
	el.moving.Wait()
	el.checkIndex(t, "g", map[string]string{"c": "backup"})
}

// breakable wraps a provider: the test breaks its watches and holds the
// element's next Watch until it lets it through.
type breakable struct {
	view.Provider
	mu       sync.Mutex
	watchers []*breakableWatcher
	hold     chan struct{} // nil: Watch passes
	watching chan struct{}
}

type breakableWatcher struct {
	view.Watcher
	broken chan struct{}
}

func (b *breakable) Watch(ctx context.Context, group string, after view.View) (view.Watcher, error) {
	b.mu.Lock()
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		b.watching <- struct{}{}
		<-hold
	}
	w, err := b.Provider.Watch(ctx, group, after)
	if err != nil {
		return nil, err
	}
	bw := &breakableWatcher{Watcher: w, broken: make(chan struct{})}
	b.mu.Lock()
	b.watchers = append(b.watchers, bw)
	b.mu.Unlock()
	return bw, nil
}

func (w *breakableWatcher) Next(ctx context.Context) (view.View, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {})
	defer stop()
	go func() {
		select {
		case <-w.broken:
			cancel()
		case <-ctx.Done():
		}
	}()
	v, err := w.Watcher.Next(ctx)
	select {
	case <-w.broken:
		return view.View{}, fmt.Errorf("the watch broke")
	default:
	}
	return v, err
}

// breakAll breaks every watch and holds the next Watch.
func (b *breakable) breakAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = make(chan struct{})
	for _, w := range b.watchers {
		close(w.broken)
	}
	b.watchers = nil
}

func (b *breakable) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.hold)
	b.hold = nil
}

// TestWatchResumes: the element's watch breaks; while it is away a member
// leaves; the watch resumes from the last view the element had, so the
// departure is seen and the member's connections move.
func TestWatchResumes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()
	bp := &breakable{Provider: p, watching: make(chan struct{}, 1)}
	el := NewServer(ctx, bp, WithWatchRetry(time.Millisecond, time.Millisecond)).(*server)
	tail := &gateTail{gate: make(chan struct{}), seen: make(chan *networkservice.Connection, 16)}
	close(tail.gate)
	srv := chain.NewServer(el, chain.Tail(tail))
	primary, _ := p.Join(ctx, "g", view.Member{ID: "primary", Endpoints: endpoint("primary")})
	backup, _ := p.Join(ctx, "g", view.Member{ID: "backup", Endpoints: endpoint("backup")})
	defer func() { _ = backup.Leave(ctx) }()
	if _, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "g"}}); err != nil {
		t.Fatal(err)
	}
	<-tail.seen
	bp.breakAll()
	<-bp.watching // the element is watching again, held
	if err := primary.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	bp.release()
	select {
	case moved := <-tail.seen:
		if moved.GetNetworkServiceEndpointName() != "backup" {
			t.Fatalf("moved to %s", moved.GetNetworkServiceEndpointName())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the departure during the break was missed")
	}
	el.moving.Wait()
	el.checkIndex(t, "g", map[string]string{"c": "backup"})
}

// TestGroupChange: a refresh that names another group moves the connection
// there, and the first group is no longer followed.
func TestGroupChange(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := embedded.New()
	defer p.Close()
	el := NewServer(ctx, p).(*server)
	srv := chain.NewServer(el, chain.Tail(okTail{}))
	for _, g := range []string{"g1", "g2"} {
		ms, _ := p.Join(ctx, g, view.Member{ID: g + "-m", Endpoints: endpoint(g)})
		defer func() { _ = ms.Leave(ctx) }()
	}
	conn, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "g1"}})
	if err != nil {
		t.Fatal(err)
	}
	conn.NetworkService = "g2"
	if conn, err = srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}); err != nil {
		t.Fatal(err)
	}
	if conn.GetNetworkServiceEndpointName() != "g2-m" {
		t.Fatalf("routed to %s", conn.GetNetworkServiceEndpointName())
	}
	if groups, entries := el.indexSize(); groups != 1 || entries != 1 {
		t.Fatalf("%d groups and %d entries after the move", groups, entries)
	}
	el.checkIndex(t, "g2", map[string]string{"c": "g2-m"})
	// A refresh to a group with no member fails and leaves the connection
	// where it was.
	conn.NetworkService = "empty"
	if _, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn.Clone()}); err == nil {
		t.Fatal("routed to an empty group")
	}
	if groups, entries := el.indexSize(); groups != 1 || entries != 1 {
		t.Fatalf("%d groups and %d entries after a failed move", groups, entries)
	}
	conn.NetworkService = "g2"
	if _, err := srv.Close(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if groups, entries := el.indexSize(); groups != 0 || entries != 0 {
		t.Fatalf("%d groups and %d entries after Close", groups, entries)
	}
}
