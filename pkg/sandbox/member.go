package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/member"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/inproc"
	"github.com/tether-mesh/tether/pkg/rdma/shm"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

// EchoMember is the package of the example member the sandbox runs as a
// child process.
const EchoMember = "github.com/tether-mesh/tether/examples/echo-member"

// MemberOption configures a sandbox member.
type MemberOption func(*memberOptions)

type memberOptions struct {
	inProcess     bool
	channels      []string
	partitionable bool
	byProxy       bool
}

// PartitionByProxy makes a Partitionable member use proxies even as root.
func PartitionByProxy() MemberOption {
	return func(o *memberOptions) {
		Partitionable()(o)
		o.byProxy = true
	}
}

// Partitionable makes a member that Partition can cut off: its stream to
// the forwarder's membership service, its endpoint and its channels (tcp
// only: shared memory has no wire to cut). As root, a member process runs
// in a network namespace of its own, joined to the host by a veth pair
// whose packets Partition drops; otherwise, and for in-process members, it
// talks through proxies that Partition stops.
func Partitionable() MemberOption {
	return func(o *memberOptions) {
		o.partitionable = true
		o.channels = []string{"tcp"}
	}
}

// InProcess runs the member in the test's process rather than as a child
// process (the inproc channel provider needs it).
func InProcess() MemberOption {
	return func(o *memberOptions) { o.inProcess = true }
}

// WithChannels sets the member's channel providers ("inproc", "shm",
// "tcp"; default shm and tcp). inproc makes the member run in-process.
func WithChannels(names ...string) MemberOption {
	return func(o *memberOptions) {
		o.channels = names
		if slices.Contains(names, "inproc") {
			o.inProcess = true
		}
	}
}

// Trace is one message a member handled.
type Trace struct {
	Member, ConnID, Payload string
	Retry                   bool
}

// Member is an echo member: it answers every call with its payload and
// records every message it handles.
type Member struct {
	s     *Sandbox
	f     *Forwarder
	group string
	id    string
	sock  string
	opts  memberOptions

	mu      sync.Mutex
	traces  []Trace
	traced  chan struct{} // closed and replaced at every trace while waiters wait
	waiters int
	running bool
	proc    *exec.Cmd
	exited  chan struct{}
	stderr  []string
	inproc  *member.Member
	views   *membership.Client

	// With Partitionable: the proxies in front of the member's membership
	// stream, endpoint and tcp channel, and the channel's real address.
	proxies     []*proxy
	channelAddr string
	ns          *netns
	nsForwarder string // the forwarder's URL from inside ns
}

// The member's ports inside its namespace.
const (
	nsEndpointPort = "7100"
	nsChannelPort  = "7200"
)

// Member starts a member of group joining through f, and waits until it is
// in f's view.
func (s *Sandbox) Member(f *Forwarder, group, id string, opts ...MemberOption) *Member {
	s.t.Helper()
	m := &Member{s: s, f: f, group: group, id: id, sock: s.path(id + ".sock"), traced: make(chan struct{}), opts: memberOptions{channels: []string{"shm", "tcp"}}}
	for _, o := range opts {
		o(&m.opts)
	}
	if m.opts.partitionable && !m.opts.inProcess && !m.opts.byProxy && netnsAvailable() {
		ns, err := newNetns()
		if err != nil {
			s.t.Fatal(err)
		}
		s.onCleanup(ns.remove) // after the member stops: cleanups run in reverse
		m.ns = ns
		if m.nsForwarder, err = f.listenTCP(ns.hostIP); err != nil {
			s.t.Fatal(err)
		}
	}
	s.mu.Lock()
	s.members[id] = m
	s.mu.Unlock()
	if err := m.start(); err != nil {
		s.t.Fatal(err)
	}
	s.onCleanup(m.Stop)
	return m
}

// ID returns the member's ID.
func (m *Member) ID() string { return m.id }

// URL returns the member's endpoint URL, as the views publish it.
func (m *Member) URL() string {
	switch {
	case m.ns != nil:
		return "tcp://" + m.ns.nsIP + ":" + nsEndpointPort
	case m.opts.partitionable:
		return "unix://" + m.proxyPath("ep")
	}
	return "unix://" + m.sock
}

// direct is the URL that reaches the member's endpoint past any proxy.
func (m *Member) direct() string {
	if m.ns != nil {
		return m.URL()
	}
	return "unix://" + m.sock
}

// PartitionKind says how Partition cuts the member off: "netns", "proxy",
// or "" when it cannot.
func (m *Member) PartitionKind() string {
	switch {
	case m.ns != nil:
		return "netns"
	case m.opts.partitionable:
		return "proxy"
	}
	return ""
}

func (m *Member) proxyPath(kind string) string { return m.s.path(m.id + "." + kind + ".sock") }

// startProxies opens, once, the proxies of a partitionable member.
func (m *Member) startProxies() error {
	if len(m.proxies) > 0 {
		return nil
	}
	// The tcp channel's own port, chosen now so that the proxy knows it.
	var lc net.ListenConfig
	probe, err := lc.Listen(m.s.ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	m.channelAddr = probe.Addr().String()
	_ = probe.Close()
	type route struct{ lnet, laddr, tnet, taddr string }
	for _, r := range []route{
		{"unix", m.proxyPath("mp"), "unix", strings.TrimPrefix(m.f.URL(), "unix://")},
		{"unix", m.proxyPath("ep"), "unix", m.sock},
		{"tcp", "127.0.0.1:0", "tcp", m.channelAddr},
	} {
		lis, err := lc.Listen(m.s.ctx, r.lnet, r.laddr)
		if err != nil {
			return err
		}
		m.proxies = append(m.proxies, newProxy(lis, r.tnet, r.taddr))
	}
	m.s.onCleanup(func() {
		for _, p := range m.proxies {
			p.close()
		}
	})
	return nil
}

// Partition cuts the member off without closing anything: its heartbeats
// stop reaching the forwarder, requests to it and its channels' traffic
// wait, and nobody hears a reset. The member must be Partitionable.
func (m *Member) Partition() {
	m.s.t.Helper()
	switch {
	case m.ns != nil:
		if err := m.ns.partition(); err != nil {
			m.s.t.Fatal(err)
		}
	case len(m.proxies) > 0:
		for _, p := range m.proxies {
			p.pause()
		}
	default:
		m.s.t.Fatalf("sandbox: member %s is not partitionable", m.id)
	}
}

// Heal ends a partition: the traffic that waited goes on.
func (m *Member) Heal() {
	m.s.t.Helper()
	if m.ns != nil {
		if err := m.ns.heal(); err != nil {
			m.s.t.Fatal(err)
		}
	}
	for _, p := range m.proxies {
		p.resume()
	}
}

func (m *Member) start() error {
	if m.opts.inProcess {
		return m.startInProcess()
	}
	return m.startProcess()
}

func (m *Member) startProcess() error {
	bin, err := Binary(m.s.ctx, EchoMember)
	if err != nil {
		return err
	}
	args := []string{
		"-group", m.group, "-id", m.id, "-view-provider", "embedded", "-forwarder-url", m.f.URL(),
		"-listen-url", "unix://" + m.sock, "-channel-providers", strings.Join(m.opts.channels, ","),
		"-shm-dir", m.s.dir, "-log-level", "warning", "-trace",
	}
	cmd := exec.CommandContext(context.Background(), bin, args...) // the sandbox's cleanup stops it
	switch {
	case m.ns != nil:
		args = append(args, "-forwarder-url", m.nsForwarder, "-listen-url", m.URL(),
			"-tcp-channel-addr", m.ns.nsIP+":"+nsChannelPort)
		cmd = m.ns.command(bin, args...)
	case m.opts.partitionable:
		if err := m.startProxies(); err != nil {
			return err
		}
		args = append(args, "-forwarder-url", "unix://"+m.proxyPath("mp"), "-advertise-url", m.URL(),
			"-tcp-channel-addr", m.channelAddr, "-tcp-channel-advertise", m.proxies[2].lis.Addr().String())
		cmd = exec.CommandContext(context.Background(), bin, args...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() {
		defer pipes.Done()
		m.readTraces(stdout)
	}()
	go func() {
		defer pipes.Done()
		m.readStderr(stderr, ready)
	}()
	go func() {
		pipes.Wait() // Wait closes the pipes: read them to the end first
		_ = cmd.Wait()
		close(exited)
	}()
	m.mu.Lock()
	m.proc, m.exited, m.running = cmd, exited, true
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.s.ctx, m.s.timeout)
	defer cancel()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("sandbox: member %s exited before it was ready:\n%s", m.id, m.stderrText())
	case <-ctx.Done():
		m.Kill()
		return fmt.Errorf("sandbox: member %s not ready in %v:\n%s", m.id, m.s.timeout, m.stderrText())
	}
}

func (m *Member) readTraces(r io.Reader) {
	// A large buffer: the member's calls wait when its output does.
	sc := bufio.NewScanner(bufio.NewReaderSize(r, 1<<20))
	sc.Split(completeLines)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) < 3 || f[0] != "call" {
			continue
		}
		tr := Trace{Member: m.id, ConnID: f[1], Retry: f[2] == "true"}
		if len(f) == 4 {
			tr.Payload = f[3]
		}
		m.record(tr)
	}
}

// completeLines splits like bufio.ScanLines but drops a last line without
// its newline: a member killed while it wrote a trace leaves part of the
// line ("call c1 false c1 1" of "... c1 17"), which would read as a trace
// of another call.
func completeLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && !bytes.Contains(data, []byte{'\n'}) {
		return len(data), nil, nil
	}
	return bufio.ScanLines(data, atEOF)
}

func (m *Member) readStderr(r io.Reader, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		if !signalled && strings.HasPrefix(line, "ready ") {
			signalled = true
			close(ready)
			continue
		}
		m.mu.Lock()
		if len(m.stderr) < 200 {
			m.stderr = append(m.stderr, line)
		}
		m.mu.Unlock()
	}
}

func (m *Member) stderrText() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.stderr, "\n")
}

func (m *Member) record(tr Trace) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.traces = append(m.traces, tr)
	if m.waiters > 0 {
		close(m.traced)
		m.traced = make(chan struct{})
	}
}

func (m *Member) startInProcess() error {
	var chs []member.Channel
	for _, name := range m.opts.channels {
		var p rdma.Provider
		switch name {
		case "inproc":
			p = inproc.New()
		case "shm":
			p = shm.New()
		case "tcp":
			p = tcp.New()
		default:
			return fmt.Errorf("sandbox: unknown channel provider %q", name)
		}
		chs = append(chs, member.Channel{Provider: p, Addr: channelAddr(name)})
	}
	forwarderURL, advertise := m.f.URL(), ""
	if m.opts.partitionable {
		if err := m.startProxies(); err != nil {
			return err
		}
		forwarderURL, advertise = "unix://"+m.proxyPath("mp"), m.URL()
		chs = []member.Channel{{Provider: tcp.New(), Addr: m.channelAddr, Advertise: m.proxies[2].lis.Addr().String()}}
	}
	views, err := membership.Dial(forwarderURL, membership.WithClientLogger(m.s.log))
	if err != nil {
		return err
	}
	handler := func(_ context.Context, req *call.Request) ([]byte, error) {
		m.record(Trace{Member: m.id, ConnID: req.ConnID, Payload: string(req.Payload), Retry: req.Retry})
		return append([]byte(nil), req.Payload...), nil
	}
	ctx, cancel := context.WithTimeout(m.s.ctx, m.s.timeout)
	defer cancel()
	mem, err := member.Start(ctx, member.Config{
		Group: m.group, ID: m.id, Views: views, ListenURL: "unix://" + m.sock, AdvertiseURL: advertise,
		Channels: chs, Handler: handler, Log: m.s.log,
	})
	if err != nil {
		_ = views.Close()
		return err
	}
	m.mu.Lock()
	m.inproc, m.views, m.running = mem, views, true
	m.mu.Unlock()
	return nil
}

func channelAddr(provider string) string {
	if provider == "tcp" {
		return "127.0.0.1:0"
	}
	return ""
}

// Kill stops the member as a crash would: SIGKILL for a child process; for
// an in-process member, its sockets, channels and membership stream break
// without a goodbye.
func (m *Member) Kill() {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return
	}
	m.running = false
	proc, exited, mem, views := m.proc, m.exited, m.inproc, m.views
	m.mu.Unlock()
	if proc != nil {
		_ = proc.Process.Signal(syscall.SIGKILL)
		<-exited
		return
	}
	mem.Abort()
	_ = views.Close()
}

// Restart starts a stopped or killed member again with the same ID and URL,
// and waits until it is in the view.
func (m *Member) Restart() {
	m.s.t.Helper()
	m.Kill()
	if err := m.start(); err != nil {
		m.s.t.Fatal(err)
	}
}

// Stop stops the member cleanly: it leaves the group and closes its
// connections.
func (m *Member) Stop() {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return
	}
	m.running = false
	proc, exited, mem, views := m.proc, m.exited, m.inproc, m.views
	m.mu.Unlock()
	if proc != nil {
		_ = proc.Process.Signal(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), m.s.timeout)
		defer cancel()
		select {
		case <-exited:
		case <-ctx.Done():
			_ = proc.Process.Signal(syscall.SIGKILL)
			<-exited
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.s.timeout)
	defer cancel()
	_ = mem.Stop(ctx)
	_ = views.Close()
}

// Traces returns what the member handled so far.
func (m *Member) Traces() []Trace {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.traces)
}

// WaitTrace waits until cond holds for the member's traces.
func (m *Member) WaitTrace(cond func([]Trace) bool) []Trace {
	m.s.t.Helper()
	ctx, cancel := context.WithTimeout(m.s.ctx, m.s.timeout)
	defer cancel()
	m.mu.Lock()
	m.waiters++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.waiters--
		m.mu.Unlock()
	}()
	for {
		m.mu.Lock()
		traces, traced := slices.Clone(m.traces), m.traced
		m.mu.Unlock()
		if cond(traces) {
			return traces
		}
		select {
		case <-traced:
		case <-ctx.Done():
			m.s.t.Fatalf("sandbox: member %s: traces %v never satisfied the condition", m.id, traces)
		}
	}
}

// Connections returns the connections the member holds, as its monitor
// service reports them.
func (m *Member) Connections() (map[string]*networkservice.Connection, error) {
	target, err := sockurl.GRPCTarget(mustParse(m.direct())) // past any proxy
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(m.s.ctx, m.s.timeout)
	defer cancel()
	stream, err := networkservice.NewMonitorConnectionClient(cc).MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	if err != nil {
		return nil, err
	}
	ev, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if ev.GetType() != networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER {
		return nil, errors.New("sandbox: the member's monitor did not start with its state")
	}
	return ev.GetConnections(), nil
}

func mustParse(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return u
}
