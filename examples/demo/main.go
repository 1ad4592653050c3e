// Command demo is tether's one-command demo:
//
//	go run ./examples/demo
//
// It builds and starts a forwarder (cmd/forwarder, embedded view provider)
// and three example members (examples/echo-member) as real processes, in a
// temporary directory; connects four clients that call the group without a
// pause; SIGKILLs the member that serves the most connections; shows every
// connection heal onto another member and how long it took; restarts the
// member; and ends with a summary. It exits 0 when no answered call was
// lost and no call failed, and leaves no process or socket behind.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/heal"
	"github.com/tether-mesh/tether/pkg/sandbox"
)

func main() {
	clients := flag.Int("clients", 4, "clients, one connection each")
	run := flag.Duration("run", 3*time.Second, "traffic before the kill, and again after the restart")
	flag.Parse()
	os.Exit(runDemo(*clients, *run))
}

func runDemo(clients int, run time.Duration) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &demo{out: os.Stdout, tty: isTerminal(os.Stdout), clients: clients, run: run}
	err := d.main(ctx)
	d.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	return 0
}

type demo struct {
	out     io.Writer
	tty     bool
	clients int
	run     time.Duration

	dir       string
	forwarder *proc
	members   map[string]*proc

	mu       sync.Mutex
	calls    int
	failed   []string
	lost     []string
	heals    []time.Duration
	progress string
}

func (d *demo) main(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "tether-demo")
	if err != nil {
		return err
	}
	d.dir = dir
	d.say("building the forwarder and the example member (go build)...")
	fwdBin, err := sandbox.Binary(ctx, "github.com/tether-mesh/tether/cmd/forwarder")
	if err != nil {
		return err
	}
	memberBin, err := sandbox.Binary(ctx, "github.com/tether-mesh/tether/examples/echo-member")
	if err != nil {
		return err
	}

	fwdURL := "unix://" + filepath.Join(dir, "forwarder.sock")
	d.forwarder, err = start(ctx, "forwarder", fwdBin, []string{
		"--listen-url", fwdURL, "--metrics-addr", "127.0.0.1:0", "--log-level", "warning", "--name", "demo-node",
	}, "ready")
	if err != nil {
		return err
	}
	d.say("forwarder ready on %s", fwdURL)

	d.members = map[string]*proc{}
	memberArgs := func(id string) []string {
		return []string{"-group", "echo", "-id", id, "-forwarder-url", fwdURL,
			"-listen-url", "unix://" + filepath.Join(dir, id+".sock"), "-shm-dir", dir, "-log-level", "warning"}
	}
	for _, id := range []string{"m1", "m2", "m3"} {
		p, err := start(ctx, id, memberBin, memberArgs(id), "ready ")
		if err != nil {
			return err
		}
		d.members[id] = p
	}
	d.say("members m1, m2, m3 joined group echo")

	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	type session struct {
		c    *client.Client
		conn *client.Conn
	}
	var sessions []session
	defer func() { //nolint:contextcheck // Close ends what it started, whatever ctx says
		for _, s := range sessions {
			_ = s.c.Close()
		}
	}()
	var healing sync.Map // conn ID -> member before the heal
	for i := range d.clients {
		var sess session
		c, err := client.Dial(fwdURL, client.WithLogger(logrus.NewEntry(quiet)), client.WithHealObserver(func(r heal.Report) {
			d.observe(r, sess.conn, &healing)
		}))
		if err != nil {
			return err
		}
		conn, err := c.Connect(ctx, "echo")
		if err != nil {
			_ = c.Close() //nolint:contextcheck // Close ends what it started, whatever ctx says
			return fmt.Errorf("client %d: %w", i, err)
		}
		sess = session{c, conn}
		sessions = append(sessions, sess)
		d.say("client %d connected to %s", i+1, conn.Member())
	}

	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	var traffic sync.WaitGroup
	for i, s := range sessions {
		traffic.Go(func() { d.call(trafficCtx, i, s.conn) })
	}
	ticker := d.ticker(trafficCtx, sessions[0].conn)
	defer ticker()

	wait := func(dur time.Duration) error {
		select {
		case <-time.After(dur):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(d.run); err != nil {
		return err
	}
	counts := map[string]int{}
	for _, s := range sessions {
		counts[s.conn.Member()]++
		healing.Store(s.conn.ID(), s.conn.Member())
	}
	victim := "m1"
	for id, n := range counts {
		if n > counts[victim] || (n == counts[victim] && id < victim) {
			victim = id
		}
	}
	d.say("SIGKILL %s (it serves %d of %d connections)", victim, counts[victim], len(sessions))
	d.members[victim].kill()
	if err := wait(d.run); err != nil {
		return err
	}
	d.say("restarting %s", victim)
	d.members[victim], err = start(ctx, victim, memberBin, memberArgs(victim), "ready ")
	if err != nil {
		return err
	}
	if err := wait(d.run); err != nil {
		return err
	}
	stopTraffic()
	traffic.Wait()
	ticker()
	for _, s := range sessions {
		if err := s.conn.Close(ctx); err != nil {
			return err
		}
	}
	return d.summary()
}

// call makes sequenced calls on conn until ctx ends and checks each answer.
func (d *demo) call(ctx context.Context, i int, conn *client.Conn) {
	for seq := 0; ctx.Err() == nil; seq++ {
		payload := fmt.Sprintf("client-%d #%d", i+1, seq)
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		reply, err := conn.Call(callCtx, []byte(payload))
		cancel()
		d.mu.Lock()
		switch {
		case err != nil && ctx.Err() != nil: // the demo is ending
		case err != nil:
			d.failed = append(d.failed, fmt.Sprintf("%s: %v", payload, err))
		case string(reply) != payload:
			d.lost = append(d.lost, fmt.Sprintf("%s answered %q", payload, reply))
		default:
			d.calls++
		}
		d.mu.Unlock()
	}
}

func (d *demo) observe(r heal.Report, conn *client.Conn, healing *sync.Map) {
	if r.Kind != heal.Succeeded || conn == nil {
		return
	}
	from, _ := healing.Load(r.ConnID)
	healing.Store(r.ConnID, conn.Member())
	d.mu.Lock()
	d.heals = append(d.heals, r.Took)
	d.mu.Unlock()
	d.say("heal: connection %s moved %v → %s in %v", r.ConnID[:8], from, conn.Member(), r.Took.Round(10*time.Microsecond))
}

// ticker prints the progress line until the returned function is called.
func (d *demo) ticker(ctx context.Context, conn *client.Conn) func() {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-t.C:
			}
			d.mu.Lock()
			line := fmt.Sprintf("calls %d  heals %d  failed %d  lost %d", d.calls, len(d.heals), len(d.failed), len(d.lost))
			d.mu.Unlock()
			d.setProgress(line)
		}
	}()
	return func() {
		once.Do(func() {
			close(done)
			d.setProgress("")
		})
	}
}

func (d *demo) setProgress(line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.progress = line
	if d.tty {
		fmt.Fprintf(d.out, "\r\033[K%s", line)
	}
}

// say prints a line above the progress line.
func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tty {
		fmt.Fprint(d.out, "\r\033[K")
	}
	fmt.Fprintf(d.out, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	if d.tty && d.progress != "" {
		fmt.Fprint(d.out, d.progress)
	}
}

func (d *demo) summary() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	heals := slices.Clone(d.heals)
	slices.Sort(heals)
	q := func(f float64) time.Duration {
		if len(heals) == 0 {
			return 0
		}
		return heals[min(int(f*float64(len(heals))), len(heals)-1)].Round(10 * time.Microsecond)
	}
	fmt.Fprintf(d.out, "\nsummary: calls %d, heals %d, heal p50 %v p99 %v, failed %d, lost %d\n",
		d.calls, len(heals), q(0.5), q(0.99), len(d.failed), len(d.lost))
	for _, f := range append(slices.Clone(d.failed), d.lost...) {
		fmt.Fprintln(d.out, "  ", f)
	}
	if len(d.failed) > 0 || len(d.lost) > 0 {
		return errors.New("calls failed or were lost")
	}
	return nil
}

// cleanup stops every process and removes the directory.
func (d *demo) cleanup() {
	var wg sync.WaitGroup
	for _, m := range d.members {
		wg.Go(m.stop)
	}
	wg.Wait()
	if d.forwarder != nil {
		d.forwarder.stop()
	}
	if d.dir != "" {
		_ = os.RemoveAll(d.dir)
	}
}

// proc is a child process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	logs   []string
}

// start runs bin and waits until a line of its output starts with ready.
func start(ctx context.Context, name, bin string, args []string, ready string) (*proc, error) {
	cmd := exec.CommandContext(context.Background(), bin, args...) //nolint:contextcheck // stopped by cleanup, not by ctx
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	readyCh := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if !signalled && strings.HasPrefix(line, ready) {
				signalled = true
				close(readyCh)
			}
			p.mu.Lock()
			if len(p.logs) < 100 {
				p.logs = append(p.logs, line)
			}
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-readyCh:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before it was ready:\n%s", name, p.output())
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("%s not ready in 30s:\n%s", name, p.output())
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop asks the process to stop (SIGTERM) and kills it after 10 s.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
