package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// want3770 is what -mode=3770 means.
const want3770 = fs.ModeSetgid | fs.ModeSticky | 0o770

func modeOf(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSticky | fs.ModeSetuid)
}

func TestPrepareSetsModeCreatesSubdirsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // what the kubelet leaves behind
		t.Fatal(err)
	}
	// Chown to oneself needs no privilege, so the test runs as any user.
	uid, gid := os.Getuid(), os.Getgid()
	args := []string{"-dir=" + dir, "-uid=" + strconv.Itoa(uid), "-gid=" + strconv.Itoa(gid), "-mode=3770", "-subdirs=shm, sockets"}

	var out bytes.Buffer
	if err := run(args, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, p := range []string{dir, filepath.Join(dir, "shm"), filepath.Join(dir, "sockets")} {
		if got := modeOf(t, p); got != want3770 {
			t.Errorf("%s: mode %v, want %v", p, got, want3770)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
	if !strings.Contains(out.String(), "/shm: created") || !strings.Contains(out.String(), ": mode 0755 -> 3770") {
		t.Errorf("first run should report what it changed; got:\n%s", out.String())
	}

	out.Reset()
	if err := run(args, &out); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 1 {
		t.Errorf("second run changed something; want only the summary line, got:\n%s", out.String())
	}
}

func TestPrepareRefusesLinksAndFiles(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"subdir is a link out of the directory", func(dir string) error {
			return os.Symlink(outside, filepath.Join(dir, "shm"))
		}, "symbolic link"},
		{"subdir is a file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "shm"), nil, 0o600)
		}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			_, err := prepare(dir, []string{"shm"}, os.Getuid(), os.Getgid(), want3770)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("prepare: err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if got := modeOf(t, outside); got&fs.ModeSticky != 0 {
		t.Errorf("the link's target was changed: mode %v", got)
	}
}

func TestRunRefusesBadArguments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-dir=" + dir, "-mode=4770"}, "setuid"},
		{[]string{"-dir=" + dir, "-mode=rwx"}, "octal"},
		{[]string{"-dir=" + dir, "-mode=17770"}, "octal"},
		{[]string{"-dir=" + dir, "-uid=-1"}, "negative"},
		{[]string{"-dir=" + dir, "-subdirs=a/b"}, "single name"},
		{[]string{"-dir=" + dir, "-subdirs=.."}, "single name"},
		{[]string{"-dir=" + filepath.Join(dir, "missing", "tether")}, "no such file or directory"},
		{[]string{"-dir=" + dir, "extra"}, "unexpected argument"},
	} {
		var out bytes.Buffer
		err := run(tc.args, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q): err = %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestPrepareCreatesMissingDir(t *testing.T) {
	t.Parallel()
	uid, gid := os.Getuid(), os.Getgid()
	for _, tc := range []struct {
		name    string
		dir     func(parent string) (string, error) // the -dir to prepare, set up below parent
		want    string                              // in the output when created, in the error otherwise
		created bool
	}{
		{"missing directory is created", func(parent string) (string, error) {
			return filepath.Join(parent, "tether"), nil
		}, ": created", true},
		{"missing parent is an error naming the path once", func(parent string) (string, error) {
			return filepath.Join(parent, "missing", "tether"), nil
		}, "no such file or directory", false},
		{"link to a missing directory is refused", func(parent string) (string, error) {
			dir := filepath.Join(parent, "tether")
			return dir, os.Symlink(filepath.Join(parent, "elsewhere"), dir)
		}, "symbolic link", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			dir, err := tc.dir(parent)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = run([]string{"-dir=" + dir, "-uid=" + strconv.Itoa(uid), "-gid=" + strconv.Itoa(gid), "-mode=3770", "-subdirs=shm"}, &out)
			if !tc.created {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("run: err = %v, want one containing %q", err, tc.want)
				}
				if n := strings.Count(err.Error(), dir); n != 1 {
					t.Errorf("run: err = %v, names %s %d times, want once", err, dir, n)
				}
				entries, err := os.ReadDir(parent)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					if e.IsDir() {
						t.Errorf("a failed run created %s", filepath.Join(parent, e.Name()))
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), dir+tc.want) {
				t.Errorf("output does not say %q:\n%s", dir+tc.want, out.String())
			}
			for _, p := range []string{dir, filepath.Join(dir, "shm")} {
				if got := modeOf(t, p); got != want3770 {
					t.Errorf("%s: mode %v, want %v", p, got, want3770)
				}
			}
		})
	}
}

func TestCommandExitStatus(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	own := []string{"-dir=" + dir, "-uid=" + strconv.Itoa(os.Getuid()), "-gid=" + strconv.Itoa(os.Getgid())}
	for _, tc := range []struct {
		args       []string
		status     int
		stdout     string // in standard output
		stderrLine string // the one line on standard error; "" for none
	}{
		{[]string{"-h"}, 0, "Usage of tether-socket-dir", ""},
		{[]string{"-help"}, 0, "Usage of tether-socket-dir", ""},
		{[]string{"--help"}, 0, "-subdirs string", ""},
		{own, 0, " ready: owner ", ""},
		{[]string{"-dir=" + dir, "-mode=rwx"}, 1, "", "tether-socket-dir: -mode \"rwx\": want an octal mode such as 3770\n"},
	} {
		var stdout, stderr bytes.Buffer
		status := command(tc.args, &stdout, &stderr)
		if status != tc.status {
			t.Errorf("command(%q) = %d, want %d (stderr %q)", tc.args, status, tc.status, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.stdout) {
			t.Errorf("command(%q): stdout does not contain %q:\n%s", tc.args, tc.stdout, stdout.String())
		}
		if stderr.String() != tc.stderrLine {
			t.Errorf("command(%q): stderr = %q, want %q", tc.args, stderr.String(), tc.stderrLine)
		}
	}
}
