package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// netns is a network namespace of the sandbox's own, joined to the host by
// a veth pair: a member in it reaches the forwarder, and clients reach it,
// only over the pair, which Partition cuts by dropping every packet (tc's
// blackhole queue) on both ends: nothing is closed, nobody hears a reset.
type netns struct {
	name           string
	hostDev, nsDev string
	hostIP, nsIP   string
}

// NetnsAvailable reports whether Partitionable members run in network
// namespaces here (root, with the ip and tc commands).
func NetnsAvailable() bool { return netnsAvailable() }

// netnsAvailable reports whether the sandbox can make namespaces: it needs
// root and the ip and tc commands.
func netnsAvailable() bool {
	if os.Geteuid() != 0 {
		return false
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}

func run(args ...string) error {
	out, err := exec.CommandContext(context.Background(), args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetns makes a namespace with a /30 of 10.x.y.z chosen at random (the
// host end is .1, the namespace's .2).
func newNetns() (*netns, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	tag := fmt.Sprintf("%08x", binary.BigEndian.Uint32(b[:]))
	base := fmt.Sprintf("10.%d.%d.%d", 200+int(b[0])%50, b[1], b[2]&0xfc)
	prefix := base[:strings.LastIndex(base, ".")+1]
	last := int(b[2] & 0xfc)
	n := &netns{
		name:    "tsb-" + tag,
		hostDev: "tsh" + tag[:8],
		nsDev:   "tsn" + tag[:8],
		hostIP:  fmt.Sprintf("%s%d", prefix, last+1),
		nsIP:    fmt.Sprintf("%s%d", prefix, last+2),
	}
	steps := [][]string{
		{"ip", "netns", "add", n.name},
		{"ip", "link", "add", n.hostDev, "type", "veth", "peer", "name", n.nsDev},
		{"ip", "link", "set", n.nsDev, "netns", n.name},
		{"ip", "addr", "add", n.hostIP + "/30", "dev", n.hostDev},
		{"ip", "link", "set", n.hostDev, "up"},
		{"ip", "netns", "exec", n.name, "ip", "addr", "add", n.nsIP + "/30", "dev", n.nsDev},
		{"ip", "netns", "exec", n.name, "ip", "link", "set", n.nsDev, "up"},
		{"ip", "netns", "exec", n.name, "ip", "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			n.remove()
			return nil, err
		}
	}
	return n, nil
}

// command runs bin with args inside the namespace.
func (n *netns) command(bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(context.Background(), "ip", append([]string{"netns", "exec", n.name, bin}, args...)...)
}

// partition drops every packet on both ends of the pair.
func (n *netns) partition() error {
	if err := run("tc", "qdisc", "replace", "dev", n.hostDev, "root", "blackhole"); err != nil {
		return err
	}
	return run("ip", "netns", "exec", n.name, "tc", "qdisc", "replace", "dev", n.nsDev, "root", "blackhole")
}

// heal lets packets through again.
func (n *netns) heal() error {
	err := run("tc", "qdisc", "del", "dev", n.hostDev, "root")
	if err2 := run("ip", "netns", "exec", n.name, "tc", "qdisc", "del", "dev", n.nsDev, "root"); err == nil {
		err = err2
	}
	return err
}

// remove deletes the namespace; its end of the pair, and so the pair, go
// with it.
func (n *netns) remove() {
	_ = run("ip", "netns", "del", n.name)
	_ = run("ip", "link", "del", n.hostDev)
}
