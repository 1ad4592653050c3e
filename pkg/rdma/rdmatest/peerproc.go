package rdmatest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-mesh/tether/internal/syncbuf"
	"github.com/tether-mesh/tether/pkg/rdma"
)

// envPeer names the environment variable that turns a re-executed test
// binary into a peer; it holds the PeerConfig as JSON.
const envPeer = "TETHER_RDMATEST_PEER"

// replyTimeout bounds the wait for a peer's answer.
const replyTimeout = 90 * time.Second

// MaybeRunPeer turns the process into a peer when it was started by
// ProcessPeer: it dials with the provider that providers returns for the
// configured name, serves commands on stdin/stdout, and exits. Otherwise it
// returns at once. Call it first thing in TestMain.
func MaybeRunPeer(providers func(name string) rdma.Provider) {
	raw := os.Getenv(envPeer)
	if raw == "" {
		return
	}
	var cfg PeerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "peer config:", err)
		os.Exit(2)
	}
	p := providers(cfg.Provider)
	if p == nil {
		fmt.Fprintln(os.Stderr, "peer: no provider", cfg.Provider)
		os.Exit(2)
	}
	if err := ServePeer(p, cfg, os.Stdin, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
	}
	os.Exit(0)
}

// Peer is the remote end of a conformance test, driven by line commands
// (see ServePeer).
type Peer interface {
	// Dialed returns the peer's first line: "ok dialed" or "err <class> ...".
	Dialed(t testing.TB) string
	// Do sends a command and returns the answer.
	Do(t testing.TB, cmd string) string
	// Request sends a command without waiting; Reply returns its answer.
	Request(t testing.TB, cmd string)
	// Reply waits for the answer to the oldest unanswered Request.
	Reply(t testing.TB) string
	// Kill ends the peer abruptly: SIGKILL for a process, an abort of its
	// channel for a goroutine.
	Kill(t testing.TB)
	// Close asks the peer to exit and waits for it.
	Close(t testing.TB)
}

// StartFunc starts a peer for cfg.
type StartFunc func(t testing.TB, cfg PeerConfig) Peer

// linePeer speaks the line protocol over a writer and a reader.
type linePeer struct {
	w      io.WriteCloser
	lines  chan string
	kill   func()
	wait   func() error
	mu     sync.Mutex
	closed bool
}

func newLinePeer(w io.WriteCloser, r io.Reader, kill func(), wait func() error) *linePeer {
	p := &linePeer{w: w, lines: make(chan string, 16), kill: kill, wait: wait}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

func (p *linePeer) next(t testing.TB, what string) string {
	t.Helper()
	timer := time.NewTimer(replyTimeout)
	defer timer.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatalf("peer ended before answering %q", what)
		}
		return line
	case <-timer.C:
		t.Fatalf("peer did not answer %q within %v", what, replyTimeout)
		return ""
	}
}

func (p *linePeer) Dialed(t testing.TB) string {
	t.Helper()
	return p.next(t, "dial")
}

func (p *linePeer) Do(t testing.TB, cmd string) string {
	t.Helper()
	p.Request(t, cmd)
	return p.next(t, cmd)
}

func (p *linePeer) Request(t testing.TB, cmd string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.w, cmd); err != nil {
		t.Fatalf("peer command %q: %v", cmd, err)
	}
}

func (p *linePeer) Reply(t testing.TB) string {
	t.Helper()
	return p.next(t, "a request")
}

func (p *linePeer) Kill(t testing.TB) {
	t.Helper()
	p.kill()
	p.finish(t, true)
}

func (p *linePeer) Close(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return
	}
	_, _ = fmt.Fprintln(p.w, "exit")
	p.finish(t, false)
}

func (p *linePeer) finish(t testing.TB, killed bool) {
	t.Helper()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.w.Close()
	done := make(chan error, 1)
	go func() { done <- p.wait() }()
	timer := time.NewTimer(replyTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil && !killed {
			t.Errorf("peer exited with %v", err)
		}
	case <-timer.C:
		p.kill()
		err := <-done
		t.Errorf("peer did not exit within %v; killed (%v)", replyTimeout, err)
	}
	for range p.lines { // let the reader finish
	}
}

// ProcessPeer returns a StartFunc that re-executes the test binary as the
// peer, prefixed by prefix (for example "ip netns exec NAME"); the test
// binary's TestMain must call MaybeRunPeer. The peer's stderr is logged.
func ProcessPeer(prefix ...string) StartFunc {
	return func(t testing.TB, cfg PeerConfig) Peer {
		t.Helper()
		raw, err := json.Marshal(cfg) //nolint:gosec // G117: the test's secret goes to its own child process, by design
		if err != nil {
			t.Fatal(err)
		}
		args := append(append([]string(nil), prefix...), os.Args[0], "-test.run=^$")
		cmd := exec.CommandContext(context.Background(), args[0], args[1:]...) //nolint:gosec // G702: the test binary itself, with a prefix chosen by the test
		// A race-enabled binary sleeps a second at exit unless told otherwise.
		gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
		cmd.Env = append(os.Environ(), envPeer+"="+string(raw), "GORACE="+gorace)
		stderr := &syncbuf.Buffer{}
		cmd.Stderr = stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start peer process: %v", err)
		}
		var waitOnce sync.Once
		var waitErr error
		wait := func() error {
			waitOnce.Do(func() {
				waitErr = cmd.Wait()
				if s := strings.TrimSpace(stderr.String()); s != "" {
					t.Logf("peer process %d stderr:\n%s", cmd.Process.Pid, s)
				}
				if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
					t.Errorf("the peer process reported a data race")
				}
			})
			return waitErr
		}
		p := newLinePeer(stdin, stdout, func() { _ = cmd.Process.Kill() }, wait)
		t.Cleanup(func() { p.Close(t) })
		return &processPeer{linePeer: p, pid: cmd.Process.Pid}
	}
}

type processPeer struct {
	*linePeer
	pid int
}

// PID returns the peer process's ID.
func (p *processPeer) PID() int { return p.pid }

// GoroutinePeer returns a StartFunc that runs the peer in a goroutine of the
// test process with provider p; abort ends a channel as if its process died
// (the provider's own hook), for Kill.
func GoroutinePeer(p rdma.Provider, abort func(rdma.Channel)) StartFunc {
	return func(t testing.TB, cfg PeerConfig) Peer {
		t.Helper()
		cmdR, cmdW := io.Pipe()
		outR, outW := io.Pipe()
		var mu sync.Mutex
		var ch rdma.Channel
		done := make(chan error, 1)
		go func() {
			err := ServePeer(p, cfg, cmdR, outW, func(c rdma.Channel) {
				mu.Lock()
				ch = c
				mu.Unlock()
			})
			_ = outW.Close()
			_ = cmdR.Close()
			done <- err
		}()
		kill := func() {
			mu.Lock()
			c := ch
			mu.Unlock()
			if c != nil {
				abort(c)
			}
			_ = cmdR.CloseWithError(io.ErrClosedPipe)
		}
		var waitOnce sync.Once
		var waitErr error
		wait := func() error {
			waitOnce.Do(func() { waitErr = <-done })
			return waitErr
		}
		lp := newLinePeer(cmdW, outR, kill, func() error {
			err := wait()
			if err != nil && (strings.Contains(err.Error(), "closed pipe")) {
				return nil
			}
			return err
		})
		t.Cleanup(func() { lp.Close(t) })
		return lp
	}
}
