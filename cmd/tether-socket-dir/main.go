// Command tether-socket-dir prepares the node directory that the tether
// forwarder and the group members on a node share through a hostPath volume
// (/var/lib/tether): it makes the directory (creating it when missing; its
// parent must exist), and the subdirectories it is told to create, owned by
// the forwarder's user and the tether group, with mode 3770 (owner and group
// rwx; setgid, so that the forwarder's socket and every file created below
// belong to the tether group; sticky, so that a member cannot remove the
// forwarder's socket or another member's files).
//
// The kubelet creates a hostPath directory as root with mode 0755, where a
// forwarder running as a non-root user cannot create its socket; changing
// that takes root once per node. This command is the init container of the
// forwarder DaemonSet, the one container of the deployment that runs as root,
// with only the CHOWN and FOWNER capabilities and a read-only root file
// system. It never follows a symbolic link out of the directory, refuses a
// subdirectory that is a link, does not create a directory where a link
// points, and does nothing when everything is already as it should be.
//
//	tether-socket-dir -dir=/var/lib/tether -uid=65532 -gid=65532 -mode=3770 -subdirs=shm
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	os.Exit(command(os.Args[1:], os.Stdout, os.Stderr))
}

// command runs the command line and returns the exit status: 0 when the
// directory is ready or help was asked for (-h, -help), 1 with one line on
// stderr otherwise.
func command(args []string, stdout, stderr io.Writer) int {
	err := run(args, stdout)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "tether-socket-dir: %v\n", err)
		return 1
	}
}

// run parses the command line and prepares the directory. It returns
// flag.ErrHelp, having printed the usage, when args ask for help.
func run(args []string, out io.Writer) error {
	flags := flag.NewFlagSet("tether-socket-dir", flag.ContinueOnError)
	flags.SetOutput(out)
	dir := flags.String("dir", "/var/lib/tether", "the shared directory (the hostPath mount)")
	uid := flags.Int("uid", 65532, "numeric user that owns the directory (the forwarder's runAsUser)")
	gid := flags.Int("gid", 65532, "numeric tether group (the forwarder's runAsGroup, a supplemental group of every member)")
	modeText := flags.String("mode", "3770", "octal mode of the directory and its subdirectories")
	subdirs := flags.String("subdirs", "shm", "comma-separated subdirectories to create with the same owner and mode")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", flags.Arg(0))
	}
	mode, err := parseMode(*modeText)
	if err != nil {
		return err
	}
	if *uid < 0 || *gid < 0 {
		return fmt.Errorf("-uid and -gid must not be negative (got %d:%d)", *uid, *gid)
	}
	var names []string
	for s := range strings.SplitSeq(*subdirs, ",") {
		if s = strings.TrimSpace(s); s != "" {
			names = append(names, s)
		}
	}
	changed, err := prepare(*dir, names, *uid, *gid, mode)
	if err != nil {
		return err
	}
	for _, c := range changed {
		fmt.Fprintln(out, c)
	}
	fmt.Fprintf(out, "%s ready: owner %d:%d, mode %s, subdirectories %q\n", *dir, *uid, *gid, *modeText, names)
	return nil
}

// parseMode reads an octal mode such as 3770. The setuid bit is refused: it
// has no meaning on a directory and is never what was meant.
func parseMode(s string) (fs.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("-mode %q: want an octal mode such as 3770", s)
	}
	if n&0o4000 != 0 {
		return 0, fmt.Errorf("-mode %q: the setuid bit is not allowed", s)
	}
	mode := fs.FileMode(n & 0o777)
	if n&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode, nil
}

// prepare sets the owner and mode of dir and of each subdirectory (created
// when missing), and returns a line for every change it made.
func prepare(dir string, subdirs []string, uid, gid int, mode fs.FileMode) ([]string, error) {
	var changed []string
	top, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Created private; fixDir below gives it its owner and mode, as
		// for a subdirectory.
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err // "mkdir <dir>: ..." names the directory
		}
		changed = append(changed, dir+": created")
	case err != nil:
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if top != nil && top.Mode()&fs.ModeSymlink != 0 && errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: is a symbolic link to a missing directory; refusing to create it", dir)
		}
		return nil, err // "open <dir>: ..." names the directory
	}
	defer root.Close()

	for _, name := range append([]string{"."}, subdirs...) {
		shown := dir
		if name != "." {
			shown = dir + "/" + name
			if name == ".." || strings.ContainsRune(name, '/') {
				return changed, fmt.Errorf("subdirectory %q: want a single name", name)
			}
			err := root.Mkdir(name, 0o700)
			switch {
			case err == nil:
				changed = append(changed, shown+": created")
			case !errors.Is(err, fs.ErrExist):
				return changed, fmt.Errorf("create %s: %w", shown, err)
			}
		}
		c, err := fixDir(root, name, uid, gid, mode)
		if err != nil {
			return changed, fmt.Errorf("%s: %w", shown, err)
		}
		for _, line := range c {
			changed = append(changed, shown+": "+line)
		}
	}
	return changed, nil
}

// fixDir gives the directory name, inside root, the owner and mode. It works
// on an open descriptor and checks that the descriptor is the directory that
// was inspected, so an entry swapped for a link in between is not changed.
func fixDir(root *os.Root, name string, uid, gid int, mode fs.FileMode) ([]string, error) {
	before, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if before.Mode()&fs.ModeSymlink != 0 {
		return nil, errors.New("is a symbolic link; refusing to change it")
	}
	if !before.IsDir() {
		return nil, fmt.Errorf("is not a directory (%s)", before.Mode().Type())
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(before, info) {
		return nil, errors.New("changed while being prepared; refusing to change it")
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, errors.New("no owner information on this platform")
	}
	var changed []string
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := f.Chown(uid, gid); err != nil {
			return nil, err
		}
		changed = append(changed, fmt.Sprintf("owner %d:%d -> %d:%d", st.Uid, st.Gid, uid, gid))
	}
	const bits = fs.ModePerm | fs.ModeSetgid | fs.ModeSticky | fs.ModeSetuid
	if info.Mode()&bits != mode {
		if err := f.Chmod(mode); err != nil {
			return nil, err
		}
		changed = append(changed, fmt.Sprintf("mode %s -> %s", octal(info.Mode()), octal(mode)))
	}
	return changed, nil
}

// octal writes a mode the way chmod takes it, e.g. 3770.
func octal(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}
