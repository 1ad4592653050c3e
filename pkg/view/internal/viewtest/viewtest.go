// Package viewtest holds what the tests of several view packages share: the
// child process roles of a member and of a membership server, and a gRPC
// server of an embedded provider on a unix socket.
package viewtest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/internal/childproc"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

// Role names of the child processes.
const (
	// RoleGRPCMember joins a group through the membership service and stays
	// until it is killed or stopped.
	RoleGRPCMember = "grpc-member"
	// RoleServer serves an embedded provider over the membership service on
	// a unix socket until it is killed or stopped.
	RoleServer = "membership-server"
)

// StartTimeout bounds how long a child process takes to be ready.
const StartTimeout = 30 * time.Second

// MemberArg is the argument of a member role.
type MemberArg struct {
	Target string      `json:"target"`
	Group  string      `json:"group"`
	Member view.Member `json:"member"`
}

// ServerArg is the argument of RoleServer.
type ServerArg struct {
	Socket    string        `json:"socket"`
	Heartbeat time.Duration `json:"heartbeat"`
	Lease     time.Duration `json:"lease"`
}

// Roles are the child roles of this package, for childproc.Main.
var Roles = map[string]childproc.Role{
	RoleGRPCMember: grpcMember,
	RoleServer:     server,
}

func grpcMember(ctx context.Context, arg string, ready func(string)) error {
	var a MemberArg
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return err
	}
	c, err := membership.Dial(a.Target)
	if err != nil {
		return err
	}
	defer c.Close()
	ms, err := c.Join(ctx, a.Group, a.Member)
	if err != nil {
		return err
	}
	ready(strconv.FormatUint(ms.Member().Incarnation, 10))
	select {
	case <-ctx.Done():
		return ms.Leave(context.WithoutCancel(ctx))
	case <-ms.Done():
		return ms.Err()
	}
}

func server(ctx context.Context, arg string, ready func(string)) error {
	var a ServerArg
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return err
	}
	p := embedded.New(embedded.WithLease(a.Heartbeat, a.Lease))
	defer p.Close()
	target := "unix://" + a.Socket
	lis, err := sockurl.Listen(ctx, target, 0)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	membership.Register(s, p)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	ready(target)
	<-ctx.Done()
	s.Stop()
	return <-served
}

// Arg encodes a role's argument.
func Arg(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// SpawnMember starts a child that joins group through the membership service
// at target and returns once it has joined.
func SpawnMember(tb testing.TB, target, group string, m view.Member) *childproc.Child {
	tb.Helper()
	return childproc.Start(tb, RoleGRPCMember, Arg(MemberArg{Target: target, Group: group, Member: m}), StartTimeout)
}

// Serve serves p over the membership service on a unix socket in a
// temporary directory of tb, until tb ends, and returns its target URL.
func Serve(tb testing.TB, p *embedded.Provider) string {
	tb.Helper()
	target := "unix://" + SocketPath(tb)
	lis, err := sockurl.Listen(context.Background(), target, 0)
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer()
	membership.Register(s, p)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	tb.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			tb.Errorf("membership server: %v", err)
		}
	})
	return target
}

// Dial dials target and closes the client when tb ends.
func Dial(tb testing.TB, target string, opts ...membership.ClientOption) *membership.Client {
	tb.Helper()
	c, err := membership.Dial(target, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// ServerProcess starts RoleServer in a child process and returns its target.
func ServerProcess(tb testing.TB, heartbeat, lease time.Duration) (*childproc.Child, string) {
	tb.Helper()
	socket := SocketPath(tb)
	c := childproc.Start(tb, RoleServer, Arg(ServerArg{Socket: socket, Heartbeat: heartbeat, Lease: lease}), StartTimeout)
	if c.Info != "unix://"+socket {
		tb.Fatalf("server child serves %q, want unix://%s", c.Info, socket)
	}
	return c, c.Info
}

// LeaseJoiner is an embedded provider whose Join takes a lease that nobody
// renews: its members hang.
type LeaseJoiner struct {
	*embedded.Provider
}

// Join implements view.Provider.
func (l LeaseJoiner) Join(ctx context.Context, group string, m view.Member) (view.Membership, error) {
	lease, err := l.JoinLease(ctx, group, m)
	if err != nil {
		return nil, err
	}
	return lease, nil
}

// SocketPath returns the path of a unix socket in a directory removed when
// tb ends; short, since a socket path is limited to 108 bytes and test names
// make long temporary directories.
func SocketPath(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "tv")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "m.sock")
}
