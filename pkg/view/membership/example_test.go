package membership_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

// The forwarder serves its embedded provider; a member in another process
// dials it, joins with the data it offers, and an observer watches.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	target := "unix://" + filepath.Join(dir, "forwarder.sock")

	// In the forwarder.
	p := embedded.New()
	defer p.Close()
	lis, err := sockurl.Listen(ctx, target, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	s := grpc.NewServer()
	membership.Register(s, p)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()

	// In a member's process.
	c, err := membership.Dial(target)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ms, err := c.Join(ctx, "kv", view.Member{
		ID:        "kv-0",
		Endpoints: map[string]string{view.EndpointGRPC: "unix:///run/kv-0.sock"},
		Data:      []byte("shard 3"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Anywhere: the view carries the member and its data.
	w, _ := c.Watch(ctx, "kv", view.View{})
	defer w.Close()
	v, _ := w.Next(ctx)
	fmt.Printf("joined %s offering %q\n", v.Joined[0].ID, v.Joined[0].Data)

	_ = ms.Leave(ctx)
	v, _ = w.Next(ctx)
	fmt.Printf("left %s, %d members\n", v.Left[0].ID, len(v.Members))
	// Output:
	// joined kv-0 offering "shard 3"
	// left kv-0, 0 members
}
