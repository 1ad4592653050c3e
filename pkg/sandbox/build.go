package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// built holds the binaries the sandbox built, once per test process.
var built sync.Map // package path -> *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// Binary builds, within ctx, the main package at pkg (an import path of this module, such
// as "github.com/tether-mesh/tether/examples/echo-member") once per process
// and returns the path of the executable.
func Binary(ctx context.Context, pkg string) (string, error) {
	v, _ := built.LoadOrStore(pkg, &buildResult{})
	r := v.(*buildResult)
	r.once.Do(func() {
		// Binaries live in the user's cache, built again by every test
		// process (go build's own cache makes that quick) into a private
		// name and renamed into place, so parallel test processes never see
		// half a file, and nothing piles up in the temporary directory.
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "tether-sandbox")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			r.err = err
			return
		}
		r.path = filepath.Join(dir, filepath.Base(pkg))
		tmp := fmt.Sprintf("%s.%d.tmp", r.path, os.Getpid())
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.Remove(tmp)
			r.err = fmt.Errorf("sandbox: go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(out)))
			return
		}
		r.err = os.Rename(tmp, r.path)
	})
	return r.path, r.err
}
