package main

import (
	"context"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/metrics"
	"github.com/tether-mesh/tether/pkg/view"
)

// oneView is a provider whose watches deliver one view.
type oneView struct {
	view.Provider
	v view.View
}

func (p *oneView) Watch(context.Context, string, view.View) (view.Watcher, error) {
	return &oneViewWatcher{v: p.v}, nil
}

type oneViewWatcher struct {
	v    view.View
	done bool
}

func (w *oneViewWatcher) Next(context.Context) (view.View, error) {
	if w.done {
		return view.View{}, errors.New("no more views")
	}
	w.done = true
	return w.v, nil
}

func (w *oneViewWatcher) Close() {}

// TestHealTracker drives the heal tracker with the events of the
// forwarder's monitor, on a fake clock.
func TestHealTracker(t *testing.T) {
	t.Parallel()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	heals := metrics.NewHeals("forwarder", healByView, healByClient)
	h := newHealTracker(heals, logrus.NewEntry(quiet))
	now := time.Unix(1_700_000_000, 0)
	h.now = func() time.Time { return now }

	// conn is the forwarder's connection fwdID of client clientID, on member.
	conn := func(fwdID, clientID, member string) *networkservice.Connection {
		return &networkservice.Connection{
			Id: fwdID, NetworkService: "g", NetworkServiceEndpointName: member,
			Path: &networkservice.Path{Index: 1, PathSegments: []*networkservice.PathSegment{{Name: "client", Id: clientID}, {Name: "fwd", Id: fwdID}}},
		}
	}
	event := func(typ networkservice.ConnectionEventType, conns ...*networkservice.Connection) {
		ev := &networkservice.ConnectionEvent{Type: typ, Connections: map[string]*networkservice.Connection{}}
		for _, c := range conns {
			ev.Connections[c.GetId()] = c
		}
		h.handle(ev)
	}
	update := func(c *networkservice.Connection) { event(networkservice.ConnectionEventType_UPDATE, c) }
	// request runs a client Request through the interceptor; the chain
	// takes took and publishes c when it succeeds.
	request := func(clientID string, took time.Duration, c *networkservice.Connection, fail bool) {
		req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: clientID}}
		_, _ = h.UnaryServerInterceptor()(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: requestMethod}, func(context.Context, any) (any, error) {
			now = now.Add(took)
			if fail {
				return nil, errors.New("no member")
			}
			update(c)
			return c, nil
		})
	}
	check := func(step string, byView, byClient, viewSeconds, clientSeconds float64) {
		t.Helper()
		got := gather(t, heals)
		for series, want := range map[string]float64{
			`tether_forwarder_heals_total{cause="view"}`:                 byView,
			`tether_forwarder_heals_total{cause="client"}`:               byClient,
			`tether_forwarder_heal_duration_seconds_sum{cause="view"}`:   viewSeconds,
			`tether_forwarder_heal_duration_seconds_sum{cause="client"}`: clientSeconds,
		} {
			if math.Abs(got[series]-want) > 1e-9 {
				t.Fatalf("%s: %s = %v, want %v", step, series, got[series], want)
			}
		}
	}

	// A new connection, its refreshes: no heal.
	request("c1", time.Millisecond, conn("f1", "c1", "a"), false)
	request("c1", time.Millisecond, conn("f1", "c1", "a"), false)
	check("new and refreshed", 0, 0, 0, 0)

	// A view without member a arrives; 5 ms later view refresh has moved
	// the connection to b.
	w, err := h.Provider(&oneView{v: view.View{Group: "g", Left: []view.Member{{ID: "a"}}}}).Watch(context.Background(), "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Millisecond)
	update(conn("f1", "c1", "b"))
	check("moved by view refresh", 1, 0, 0.005, 0)

	// The client's reselect moves it to c, in 7 ms.
	request("c1", 7*time.Millisecond, conn("f1", "c1", "c"), false)
	check("moved by the client", 1, 1, 0.005, 0.007)

	// A client request that fails leaves nothing pending: the next move is
	// view refresh's (no view recorded a departure of c: it took 0).
	request("c1", time.Millisecond, nil, true)
	update(conn("f1", "c1", "b"))
	check("failed request", 2, 1, 0.005, 0.007)

	// Closed, then opened again under the same ID on another member: a new
	// connection, not a heal.
	event(networkservice.ConnectionEventType_DELETE, conn("f1", "c1", "b"))
	request("c1", time.Millisecond, conn("f1", "c1", "a"), false)
	check("closed and reopened", 2, 1, 0.005, 0.007)

	// A subscription dropped and taken again: the initial state is the
	// truth from then on.
	event(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, conn("f1", "c1", "c"), conn("f2", "c2", "x"))
	update(conn("f1", "c1", "c"))
	update(conn("f2", "c2", "y"))
	check("after the initial state", 3, 1, 0.005, 0.007)

	// The first hop has no client segment: its own ID is the client's.
	first := &networkservice.Connection{Id: "solo", NetworkService: "g", NetworkServiceEndpointName: "a",
		Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "fwd", Id: "solo"}}}}
	request("solo", time.Millisecond, first, false)
	moved := first.Clone()
	moved.NetworkServiceEndpointName = "b"
	request("solo", 2*time.Millisecond, moved, false)
	check("first hop", 3, 2, 0.005, 0.009)

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) != 0 {
		t.Fatalf("requests left pending: %v", h.pending)
	}
}

// gather returns the samples of c by series, with histogram sums as
// name_sum.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				labels += l.GetName() + `="` + l.GetValue() + `"`
			}
			if hist := m.GetHistogram(); hist != nil {
				out[f.GetName()+"_sum{"+labels+"}"] = hist.GetSampleSum()
				continue
			}
			out[f.GetName()+"{"+labels+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}
