// Package childproc runs parts of a test in real child processes: the test
// binary re-executes itself with a role named in its environment, which
// TestMain hands to Main before running any test. Tests kill children with
// SIGKILL to see how the rest of the system notices a process that died.
package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-mesh/tether/internal/syncbuf"
)

const (
	envRole = "TETHER_TEST_CHILD_ROLE"
	envArg  = "TETHER_TEST_CHILD_ARG"
	ready   = "CHILD-READY "
)

// Role is what a child process does. It calls ready once it is ready, with
// a line of information for the parent, and returns when ctx ends: when the
// parent closed the child's stdin, or died.
type Role func(ctx context.Context, arg string, ready func(info string)) error

// Main runs the role the environment names, if any, and exits the process;
// otherwise it returns at once. Call it first in TestMain.
func Main(roles map[string]Role) {
	name := os.Getenv(envRole)
	if name == "" {
		return
	}
	role, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "childproc: unknown role %q\n", name)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The parent closes stdin to stop the child, and so does its death.
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	err := role(ctx, os.Getenv(envArg), func(info string) {
		fmt.Printf("%s%s\n", ready, info)
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "childproc: role %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Child is a running child process.
type Child struct {
	// Info is what the child reported when it became ready.
	Info string
	// PID is the child's process ID.
	PID int

	cmd    *exec.Cmd
	stdin  io.Closer
	stderr *syncbuf.Buffer
	waited chan struct{}
	// waitErr is the exit error, set before waited is closed.
	waitErr error
	once    sync.Once
}

// Start runs role in a child process with arg and returns once the child is
// ready; it fails tb when the child exits or is not ready within timeout.
// The child is killed when tb's test ends.
func Start(tb testing.TB, role, arg string, timeout time.Duration) *Child {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	// The context ends when tb's test does: exec then kills the child too.
	cmd := exec.CommandContext(tb.Context(), exe, "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envRole+"="+role, envArg+"="+arg)
	setParentDeathSignal(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	c := &Child{cmd: cmd, stdin: stdin, stderr: &syncbuf.Buffer{}, waited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c.PID = cmd.Process.Pid
	tb.Cleanup(func() {
		c.Kill()
		if tb.Failed() {
			tb.Logf("child %s (pid %d) stderr:\n%s", role, c.PID, c.stderr.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			if line := sc.Text(); !found && strings.HasPrefix(line, ready) {
				found = true
				lines <- strings.TrimPrefix(line, ready)
			}
		}
		close(lines)
		// Wait only after stdout is drained, as exec requires.
		c.waitErr = cmd.Wait()
		close(c.waited)
	}()
	select {
	case info, ok := <-lines:
		if !ok {
			<-c.waited
			tb.Fatalf("child %s exited before it was ready (%v): %s", role, cmd.ProcessState, c.stderr.String())
		}
		c.Info = info
	case <-time.After(timeout):
		c.Kill()
		tb.Fatalf("child %s was not ready within %v: %s", role, timeout, c.stderr.String())
	}
	return c
}

// Kill kills the child with SIGKILL and waits for it to exit. It is
// idempotent.
func (c *Child) Kill() {
	c.once.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		_ = c.stdin.Close()
	})
	<-c.waited
}

// Signal sends sig to the child (SIGSTOP to hang it, SIGKILL to kill it
// without waiting).
func (c *Child) Signal(sig os.Signal) error {
	err := c.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Stop asks the child to return from its role (it closes the child's stdin)
// and waits for it to exit; it returns the child's exit error.
func (c *Child) Stop() error {
	_ = c.stdin.Close()
	<-c.waited
	return c.waitErr
}
