package sandbox

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/view"
)

// DefaultTimeout bounds every wait of a sandbox.
const DefaultTimeout = 20 * time.Second

// Sandbox is one test's topology.
type Sandbox struct {
	t       testing.TB
	dir     string
	log     *logrus.Entry
	timeout time.Duration
	ctx     context.Context

	mu      sync.Mutex
	members map[string]*Member
	stops   []func() // in reverse order at cleanup
}

// Option configures New.
type Option func(*Sandbox)

// WithTimeout sets the bound of every wait (default DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(s *Sandbox) { s.timeout = d }
}

// WithLogger sends the sandbox's components' logs to log (default: none).
func WithLogger(log *logrus.Entry) Option {
	return func(s *Sandbox) { s.log = log }
}

// New returns an empty sandbox whose parts are stopped when the test ends.
func New(t testing.TB, opts ...Option) *Sandbox {
	t.Helper()
	// A short directory: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "tsb")
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	s := &Sandbox{t: t, dir: dir, log: logrus.NewEntry(quiet), timeout: DefaultTimeout, members: map[string]*Member{}}
	for _, o := range opts {
		o(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*s.timeout)
	s.ctx = ctx
	t.Cleanup(func() {
		s.mu.Lock()
		stops := s.stops
		s.stops = nil
		s.mu.Unlock()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		cancel()
		_ = os.RemoveAll(dir)
	})
	return s
}

// Context returns a context that ends at the test's cleanup (or after ten
// timeouts): what a test passes to calls that should not outlive it.
func (s *Sandbox) Context() context.Context { return s.ctx }

// Dir returns the sandbox's private directory.
func (s *Sandbox) Dir() string { return s.dir }

// Timeout returns the bound of the sandbox's waits.
func (s *Sandbox) Timeout() time.Duration { return s.timeout }

func (s *Sandbox) path(name string) string { return filepath.Join(s.dir, name) }

func (s *Sandbox) onCleanup(stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops = append(s.stops, stop)
}

// Members returns the sandbox's members by ID.
func (s *Sandbox) Members() map[string]*Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*Member, len(s.members))
	for k, v := range s.members {
		out[k] = v
	}
	return out
}

// Client returns a client of f's forwarder, closed at cleanup.
func (s *Sandbox) Client(f *Forwarder, opts ...client.Option) *client.Client {
	s.t.Helper()
	c, err := client.Dial(f.URL(), append([]client.Option{client.WithLogger(s.log)}, opts...)...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.onCleanup(func() { _ = c.Close() })
	return c
}

// WaitView waits until f's view of group satisfies cond and returns it.
func (s *Sandbox) WaitView(f *Forwarder, group string, cond func(view.View) bool) view.View {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	w, err := f.Provider().Watch(ctx, group, view.View{})
	if err != nil {
		s.t.Fatal(err)
	}
	defer w.Close()
	for {
		v, err := w.Next(ctx)
		if err != nil {
			s.t.Fatalf("sandbox: waiting for the view of %s: %v", group, err)
		}
		if cond(v) {
			return v
		}
	}
}

// WaitMembers waits until group has n members at f.
func (s *Sandbox) WaitMembers(f *Forwarder, group string, n int) view.View {
	s.t.Helper()
	return s.WaitView(f, group, func(v view.View) bool { return len(v.Members) == n })
}
