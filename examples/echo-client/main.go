// Command tether-echo-client connects to a group through the node's
// forwarder and calls its member, printing each answer and the member that
// gave it.
//
// On one machine, from the repository root, with a forwarder on
// unix:///tmp/tether.sock and a member of group echo joined through it (as
// the doc of examples/echo-member starts them):
//
//	go build -o tether-echo-client ./examples/echo-client
//	./tether-echo-client -forwarder-url unix:///tmp/tether.sock -group echo -n 5
//
// It prints "hello 0 from echo-1 in 57µs" and so on. The default
// -forwarder-url, unix:///var/lib/tether/forwarder.sock, is where the
// Kubernetes manifests in deployments/ put the node's forwarder.
//
// With -hold it keeps the connection open after its calls until it is
// signalled; tests kill it there to see that nothing outlives a vanished
// client.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/shm"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
)

func main() {
	forwarder := flag.String("forwarder-url", "unix:///var/lib/tether/forwarder.sock", "the forwarder")
	group := flag.String("group", "echo", "the group to connect to")
	n := flag.Int("n", 3, "calls to make")
	timeout := flag.Duration("timeout", 10*time.Second, "for the connection and the calls")
	providers := flag.String("channel-providers", "shm,tcp", "channel providers, in order of preference")
	lifetime := flag.Duration("lifetime", 0, "connection lifetime without a refresh (0: the default, a minute)")
	hold := flag.Bool("hold", false, "keep the connection open after the calls until signalled")
	flag.Parse()
	if err := run(*forwarder, *group, *n, *timeout, *providers, *lifetime, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "tether-echo-client:", err)
		os.Exit(1)
	}
}

func run(forwarder, group string, n int, timeout time.Duration, providers string, lifetime time.Duration, hold bool) error {
	var ps []rdma.Provider
	for _, name := range strings.Split(providers, ",") {
		switch strings.TrimSpace(name) {
		case "shm":
			ps = append(ps, shm.New())
		case "tcp":
			ps = append(ps, tcp.New())
		default:
			return fmt.Errorf("-channel-providers: unknown provider %q (shm, tcp)", name)
		}
	}
	opts := []client.Option{client.WithProviders(ps...)}
	if lifetime > 0 {
		opts = append(opts, client.WithLifetime(lifetime))
	}
	c, err := client.Dial(forwarder, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.Connect(ctx, group)
	if err != nil {
		return err
	}
	for i := range n {
		start := time.Now()
		reply, err := conn.Call(ctx, fmt.Appendf(nil, "hello %d", i))
		if err != nil {
			return err
		}
		fmt.Printf("%s from %s in %v\n", reply, conn.Member(), time.Since(start).Round(time.Microsecond))
	}
	if hold {
		fmt.Println("holding", conn.ID())
		sig, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		<-sig.Done()
	}
	return conn.Close(context.Background())
}
