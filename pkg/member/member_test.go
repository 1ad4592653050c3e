package member_test

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/member"
	"github.com/tether-mesh/tether/pkg/rdma/inproc"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

var quiet = func() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}()

func echo(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil }

func TestBadConfig(t *testing.T) {
	t.Parallel()
	p := embedded.New()
	defer p.Close()
	good := member.Config{Group: "g", ID: "m", Views: p, ListenURL: "unix://" + filepath.Join(t.TempDir(), "m.sock"),
		Channels: []member.Channel{{Provider: inproc.New()}}, Handler: echo, Log: quiet}
	tests := []struct {
		name   string
		change func(*member.Config)
		want   string
	}{
		{"no group", func(c *member.Config) { c.Group = "" }, "Group and ID are required"},
		{"no views", func(c *member.Config) { c.Views = nil }, "Views is required"},
		{"no handler", func(c *member.Config) { c.Handler = nil }, "Handler is required"},
		{"no channels", func(c *member.Config) { c.Channels = nil }, "at least one channel provider"},
		{"bad URL", func(c *member.Config) { c.ListenURL = "http://x:1" }, "the scheme must be unix or tcp"},
		{"a provider twice", func(c *member.Config) {
			c.Channels = []member.Channel{{Provider: inproc.New()}, {Provider: inproc.New()}}
		}, "channel provider inproc is given twice"},
	}
	for _, tt := range tests {
		cfg := good
		tt.change(&cfg)
		if _, err := member.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// waitView waits until the group's view at p satisfies cond.
func waitView(t *testing.T, p view.Provider, cond func(view.View) bool) view.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	w, err := p.Watch(ctx, "g", view.View{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		v, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cond(v) {
			return v
		}
	}
}

func TestJoinStopAndRejoin(t *testing.T) {
	// The member joins through the membership service, as in another process.
	dir := t.TempDir()
	provider := embedded.New()
	defer provider.Close()
	serve := func() (*grpc.Server, chan struct{}) {
		lis, err := net.Listen("unix", filepath.Join(dir, "fwd.sock"))
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		membership.Register(s, provider)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.Serve(lis)
		}()
		return s, done
	}
	srv, served := serve()
	views, err := membership.Dial("unix://"+filepath.Join(dir, "fwd.sock"), membership.WithClientLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer views.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m, err := member.Start(ctx, member.Config{
		Group: "g", ID: "m1", Views: views, ListenURL: "unix://" + filepath.Join(dir, "m1.sock"),
		Channels: []member.Channel{{Provider: inproc.New(), Addr: "m1-channels"}},
		Handler:  echo, Log: quiet, Labels: map[string]string{"zone": "a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Stop(context.Background()) }()
	v := waitView(t, provider, func(v view.View) bool { return len(v.Members) == 1 })
	got := v.Members[0]
	if got.ID != "m1" || got.Endpoints[view.EndpointGRPC] != m.URL() || got.Endpoints["inproc"] != "m1-channels" || got.Labels["zone"] != "a" {
		t.Fatalf("the view shows %+v", got)
	}

	// The membership service goes away and comes back: the member joins again.
	srv.Stop()
	<-served
	waitView(t, provider, func(v view.View) bool { return len(v.Members) == 0 })
	srv, served = serve()
	defer func() {
		srv.Stop()
		<-served
	}()
	waitView(t, provider, func(v view.View) bool { return len(v.Members) == 1 })

	// Stop leaves at once.
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitView(t, provider, func(v view.View) bool { return len(v.Members) == 0 })
	if m.Connections() != 0 {
		t.Fatalf("%d connections after Stop", m.Connections())
	}
}
