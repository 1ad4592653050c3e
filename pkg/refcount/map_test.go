package refcount_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/refcount"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// values counts what a map created and destroyed, per generation.
type values struct {
	created, destroyed atomic.Int64
	live               sync.Map // value -> struct{}
	fail               atomic.Bool
}

type value struct {
	key string
	gen int64
}

func (v *values) create(k string) (*value, error) {
	if v.fail.Load() {
		return nil, errors.New("create failed")
	}
	val := &value{key: k, gen: v.created.Add(1)}
	v.live.Store(val, struct{}{})
	return val, nil
}

func (v *values) destroy(_ string, val *value) {
	if _, ok := v.live.LoadAndDelete(val); !ok {
		panic(fmt.Sprintf("value %v destroyed twice", val))
	}
	v.destroyed.Add(1)
}

func newMap() (*refcount.Map[string, *value], *values) {
	v := &values{}
	return refcount.NewMap(v.create, v.destroy), v
}

func TestMapLifecycle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                       string
		run                        func(t *testing.T, m *refcount.Map[string, *value], v *values)
		created, destroyed, remain int64
	}{
		{
			name: "shared value, destroyed by the last release",
			run: func(t *testing.T, m *refcount.Map[string, *value], _ *values) {
				a := mustAcquire(t, m, "k")
				b := mustAcquire(t, m, "k")
				if a.Value() != b.Value() {
					t.Fatal("two references to one key hold different values")
				}
				if m.Count("k") != 2 {
					t.Fatalf("count %d", m.Count("k"))
				}
				a.Release()
				a.Release() // a second release of one reference does nothing
				if m.Count("k") != 1 {
					t.Fatalf("count after one release %d", m.Count("k"))
				}
				b.Release()
			},
			created: 1, destroyed: 1,
		},
		{
			name: "keys are independent",
			run: func(t *testing.T, m *refcount.Map[string, *value], _ *values) {
				a, b, c := mustAcquire(t, m, "a"), mustAcquire(t, m, "b"), mustAcquire(t, m, "c")
				if m.Len() != 3 {
					t.Fatalf("len %d", m.Len())
				}
				a.Release()
				b.Release()
				c.Release()
			},
			created: 3, destroyed: 3,
		},
		{
			name: "force ends the value now; old references release nothing",
			run: func(t *testing.T, m *refcount.Map[string, *value], _ *values) {
				a := mustAcquire(t, m, "k")
				m.Force("k")
				if a.Alive() {
					t.Fatal("a forced value is alive")
				}
				b := mustAcquire(t, m, "k")
				if b.Value() == a.Value() {
					t.Fatal("acquire after force returned the forced value")
				}
				a.Release() // must not touch the new generation
				if m.Count("k") != 1 || !b.Alive() {
					t.Fatal("releasing an old reference changed the new value")
				}
				a.Force() // an old reference cannot force the new value
				if !b.Alive() {
					t.Fatal("an old reference forced the fresh value")
				}
				b.Force()
				m.Force("missing")
			},
			created: 2, destroyed: 2,
		},
		{
			name: "a failed create leaves no entry",
			run: func(t *testing.T, m *refcount.Map[string, *value], v *values) {
				v.fail.Store(true)
				if _, err := m.Acquire("k"); err == nil {
					t.Fatal("want the create error")
				}
				v.fail.Store(false)
				mustAcquire(t, m, "k").Release()
			},
			created: 1, destroyed: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, v := newMap()
			tt.run(t, m, v)
			if v.created.Load() != tt.created || v.destroyed.Load() != tt.destroyed {
				t.Fatalf("created %d destroyed %d, want %d and %d", v.created.Load(), v.destroyed.Load(), tt.created, tt.destroyed)
			}
			if m.Len() != 0 {
				t.Fatalf("%d entries left", m.Len())
			}
		})
	}
}

func mustAcquire(t *testing.T, m *refcount.Map[string, *value], k string) *refcount.Ref[string, *value] {
	t.Helper()
	r, err := m.Acquire(k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMapConcurrency(t *testing.T) {
	t.Parallel()
	m, v := newMap()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 500 {
				k := fmt.Sprint("k", (w+i)%5)
				r, err := m.Acquire(k)
				if err != nil {
					if errors.Is(err, refcount.ErrForced) {
						continue
					}
					t.Error(err)
					return
				}
				if r.Value().key != k {
					t.Errorf("value of %s under key %s", r.Value().key, k)
				}
				if i%7 == 0 {
					r.Force()
				}
				r.Release()
			}
		})
	}
	wg.Wait()
	if m.Len() != 0 {
		t.Fatalf("%d entries left", m.Len())
	}
	if v.created.Load() != v.destroyed.Load() {
		t.Fatalf("created %d destroyed %d", v.created.Load(), v.destroyed.Load())
	}
}

func TestForceDuringCreate(t *testing.T) {
	t.Parallel()
	entered, proceed := make(chan struct{}), make(chan struct{})
	var destroyed atomic.Int64
	m := refcount.NewMap(func(string) (int, error) {
		close(entered)
		<-proceed
		return 1, nil
	}, func(string, int) { destroyed.Add(1) })
	errs := make(chan error, 1)
	go func() {
		_, err := m.Acquire("k")
		errs <- err
	}()
	<-entered
	m.Force("k")
	close(proceed)
	if err := <-errs; !errors.Is(err, refcount.ErrForced) {
		t.Fatalf("got %v, want ErrForced", err)
	}
	if destroyed.Load() != 1 || m.Len() != 0 {
		t.Fatalf("destroyed %d, len %d", destroyed.Load(), m.Len())
	}
}

// downstream counts what reaches the end of the chain.
type downstream struct {
	requests, closes atomic.Int64
}

func (d *downstream) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	d.requests.Add(1)
	if req.GetConnection().GetLabels()["fail"] != "" {
		return nil, errors.New("refused")
	}
	return req.GetConnection(), nil
}

func (d *downstream) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	d.closes.Add(1)
	return &emptypb.Empty{}, nil
}

func TestServerGuardsTheLifetime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	req := func(id string, fail bool) *networkservice.NetworkServiceRequest {
		r := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}}
		if fail {
			r.Connection.Labels = map[string]string{"fail": "yes"}
		}
		return r
	}
	conn := func(id string) *networkservice.Connection { return &networkservice.Connection{Id: id} }
	tests := []struct {
		name             string
		run              func(srv networkservice.NetworkServiceServer)
		requests, closes int64
	}{
		{"request, refresh, close, close again", func(srv networkservice.NetworkServiceServer) {
			_, _ = srv.Request(ctx, req("a", false))
			_, _ = srv.Request(ctx, req("a", false))
			_, _ = srv.Close(ctx, conn("a"))
			_, _ = srv.Close(ctx, conn("a"))
		}, 2, 1},
		{"close of a connection never opened", func(srv networkservice.NetworkServiceServer) {
			_, _ = srv.Close(ctx, conn("never"))
		}, 0, 0},
		{"close after a failed first request", func(srv networkservice.NetworkServiceServer) {
			_, _ = srv.Request(ctx, req("a", true))
			_, _ = srv.Close(ctx, conn("a"))
		}, 1, 0},
		{"a failed refresh keeps the connection open", func(srv networkservice.NetworkServiceServer) {
			_, _ = srv.Request(ctx, req("a", false))
			_, _ = srv.Request(ctx, req("a", true))
			_, _ = srv.Close(ctx, conn("a"))
		}, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := &downstream{}
			srv := chain.NewServer(refcount.NewServer(), chain.Tail(d))
			tt.run(srv)
			if d.requests.Load() != tt.requests || d.closes.Load() != tt.closes {
				t.Fatalf("downstream saw %d requests and %d closes, want %d and %d", d.requests.Load(), d.closes.Load(), tt.requests, tt.closes)
			}
			if n := srv.(chain.ConnectionCounter).Connections(); n != 0 {
				t.Fatalf("%d connections left", n)
			}
		})
	}
}

func TestServerConcurrentCloses(t *testing.T) {
	t.Parallel()
	d := &downstream{}
	srv := chain.NewServer(refcount.NewServer(), chain.Tail(d))
	ctx := context.Background()
	for i := range 50 {
		id := fmt.Sprint("c", i)
		if _, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { _, _ = srv.Close(ctx, &networkservice.Connection{Id: id}) })
		}
		wg.Wait()
	}
	if d.closes.Load() != 50 {
		t.Fatalf("%d closes went down for 50 connections", d.closes.Load())
	}
}
