package chain_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

type setMechanism struct{}

func (setMechanism) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	req.GetConnection().Mechanism = &networkservice.Mechanism{Type: "RDMA", Parameters: map[string]string{"provider": "shm"}}
	return next.Request(ctx, req)
}

func (setMechanism) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	return next.Close(ctx, conn)
}

type setPayload struct{}

func (setPayload) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	conn, err := next.Request(ctx, req)
	if err == nil {
		conn.Payload = "ethernet"
		conn.Labels = map[string]string{"member": "m1"}
	}
	return conn, err
}

func (setPayload) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	return next.Close(ctx, conn)
}

func TestLoggerLogsWhatEachElementChanged(t *testing.T) {
	t.Parallel()
	logger, hook := test.NewNullLogger()
	srv := chain.NewServer(chain.Logger(logrus.NewEntry(logger)), setMechanism{}, setPayload{}, chain.Server(setPayload{}))

	tests := []struct {
		level logrus.Level
		want  []string
	}{
		{logrus.InfoLevel, nil},
		{logrus.DebugLevel, []string{
			`request changed chain_test.setMechanism [connection.mechanism: <none> -> {type:"RDMA" parameters:{"provider":"shm"}}]`,
			`response changed chain_test.setPayload [labels["member"]: <none> -> "m1" payload: "" -> "ethernet"]`,
		}},
	}
	for _, tt := range tests {
		hook.Reset()
		logger.SetLevel(tt.level)
		if _, err := srv.Request(context.Background(), request("c1")); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range hook.AllEntries() {
			if e.Data["conn_id"] != "c1" {
				t.Errorf("entry without conn_id: %v", e.Data)
			}
			got = append(got, fmt.Sprintf("%s %s %v", e.Message, e.Data["element"], e.Data["changes"]))
		}
		if tt.want == nil {
			if len(got) != 0 {
				t.Fatalf("at %s: %d entries: %v", tt.level, len(got), got)
			}
			continue
		}
		joined := strings.Join(got, "\n")
		for _, w := range tt.want {
			if !strings.Contains(joined, w) {
				t.Errorf("missing %q in\n%s", w, joined)
			}
		}
		if n := strings.Count(joined, "response changed chain_test.setPayload"); n != 1 {
			t.Errorf("the second setPayload changes nothing and must not be logged as a change; got %d:\n%s", n, joined)
		}
	}
}

func TestClientLogger(t *testing.T) {
	t.Parallel()
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	cl := chain.NewClient(chain.ClientLogger(logger.WithField("chain", "client")), chain.ClientFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
			req.GetConnection().NetworkService = "group-a"
			return next.Request(ctx, req, opts...)
		},
	})
	conn, err := cl.Request(context.Background(), request("c2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range hook.AllEntries() {
		msgs = append(msgs, fmt.Sprintf("%s %v %v", e.Message, e.Data["changes"], e.Data["chain"]))
	}
	want := `[request changed [connection.network_service: "" -> "group-a"] client close <nil> client]`
	if fmt.Sprint(msgs) != want {
		t.Fatalf("got %v\nwant %s", msgs, want)
	}
}

func TestChanges(t *testing.T) {
	t.Parallel()
	base := func() *networkservice.Connection {
		return &networkservice.Connection{
			Id:        "a",
			Labels:    map[string]string{"x": "1"},
			Path:      &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "n1"}}},
			Mechanism: &networkservice.Mechanism{Type: "RDMA"},
		}
	}
	tests := []struct {
		name   string
		change func(c *networkservice.Connection)
		want   string
	}{
		{"nothing", func(*networkservice.Connection) {}, "[]"},
		{"scalar", func(c *networkservice.Connection) { c.Id = "b" }, `[id: "a" -> "b"]`},
		{"map value", func(c *networkservice.Connection) { c.Labels["x"] = "2" }, `[labels["x"]: "1" -> "2"]`},
		{"map key removed", func(c *networkservice.Connection) { delete(c.Labels, "x") }, `[labels["x"]: "1" -> <none>]`},
		{"nested message", func(c *networkservice.Connection) { c.Mechanism.Cls = "LOCAL" }, `[mechanism.cls: "" -> "LOCAL"]`},
		{"message cleared", func(c *networkservice.Connection) { c.Mechanism = nil }, `[mechanism: {type:"RDMA"} -> <none>]`},
		{"list grows", func(c *networkservice.Connection) {
			c.Path.PathSegments = append(c.Path.PathSegments, &networkservice.PathSegment{Name: "n2"})
		}, `[path.path_segments[1]: <none> -> {name:"n2"}]`},
		{"list element", func(c *networkservice.Connection) { c.Path.PathSegments[0].Id = "s" }, `[path.path_segments[0].id: "" -> "s"]`},
		{"enum", func(c *networkservice.Connection) { c.State = networkservice.State_DOWN }, `[state: 0 -> 1]`},
		{"secrets never show", func(c *networkservice.Connection) {
			c.Mechanism.Parameters = map[string]string{"secret": "s3cr3t", "provider": "shm"}
		}, `[mechanism.parameters["provider"]: <none> -> "shm" mechanism.parameters["secret"]: <none> -> "<redacted>"]`},
		{"secrets in a message that appears", func(c *networkservice.Connection) {
			c.Context = &networkservice.ConnectionContext{ExtraContext: map[string]string{"token": "t0k3n", "a": "b"}}
		}, `[context: <none> -> {extra_context:{"a":"b" "token":"<redacted>"}}]`},
		{"secrets inside a new message", func(c *networkservice.Connection) {
			c.Mechanism = &networkservice.Mechanism{Parameters: map[string]string{"conn_secret": "s3cr3t"}}
		}, `[mechanism.type: "RDMA" -> "" mechanism.parameters["conn_secret"]: <none> -> "<redacted>"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := base()
			tt.change(b)
			if got := fmt.Sprint(chain.Changes(base(), b)); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
	if got := chain.Changes(nil, nil); got != nil {
		t.Fatalf("nil diff %v", got)
	}
	if got := fmt.Sprint(chain.Changes(nil, &networkservice.Connection{Id: "x"})); got != `[.: <none> -> {id:"x"}]` {
		t.Fatalf("from nil: %s", got)
	}
}
