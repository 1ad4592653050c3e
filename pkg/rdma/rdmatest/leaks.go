package rdmatest

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// FDs lists the process's open file descriptors with what they point to.
func FDs(t testing.TB) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list descriptors: %v", err)
	}
	fds := make(map[string]string, len(entries))
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the descriptor ReadDir itself used, closed meanwhile
		}
		fds[e.Name()] = target
	}
	return fds
}

// CheckLeaks records the open descriptors now and, at the end of the test
// (after the cleanups registered later, which run first), fails the test if
// a goroutine started meanwhile still runs or a descriptor opened meanwhile
// is still open. Tests using it must not run in parallel.
func CheckLeaks(t *testing.T) {
	t.Helper()
	before := FDs(t)
	t.Cleanup(func() {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			t.Errorf("goroutines left behind: %v", err)
		}
		after := FDs(t)
		var leaked []string
		for fd, target := range after {
			if before[fd] != target {
				leaked = append(leaked, fmt.Sprintf("%s -> %s", fd, target))
			}
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			t.Errorf("descriptors left open: %s", strings.Join(leaked, ", "))
		}
	})
}
