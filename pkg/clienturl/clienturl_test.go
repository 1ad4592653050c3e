package clienturl_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/clienturl"
)

func TestContext(t *testing.T) {
	t.Parallel()
	if clienturl.ClientURL(context.Background()) != nil {
		t.Fatal("a URL in an empty context")
	}
	u := &url.URL{Scheme: "unix", Path: "/run/a.sock"}
	ctx := clienturl.WithClientURL(context.Background(), u)
	if clienturl.ClientURL(ctx) != u {
		t.Fatal("the URL did not come back")
	}
}

func TestTheContextWinsOverTheConnection(t *testing.T) {
	t.Parallel()
	recorded := &url.URL{Scheme: "unix", Path: "/recorded.sock"}
	explicit := &url.URL{Scheme: "unix", Path: "/explicit.sock"}
	var got []string
	srv := chain.NewServer(
		chain.ServerFuncs{RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			clienturl.SetClientURL(ctx, recorded)
			got = append(got, clienturl.ClientURL(ctx).Path)
			got = append(got, clienturl.ClientURL(clienturl.WithClientURL(ctx, explicit)).Path)
			return next.Request(ctx, req)
		}},
		chain.ServerFuncs{CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			got = append(got, clienturl.ClientURL(ctx).Path) // the connection keeps its URL
			return next.Close(ctx, conn)
		}},
	)
	conn, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if want := "[/recorded.sock /explicit.sock /recorded.sock]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestServerSetsURLForRequestAndClose(t *testing.T) {
	t.Parallel()
	u, err := url.Parse("tcp://127.0.0.1:5001")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	record := chain.ServerFuncs{
		RequestFunc: func(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
			seen = append(seen, "request "+clienturl.ClientURL(ctx).String())
			return next.Request(ctx, req)
		},
		CloseFunc: func(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
			seen = append(seen, "close "+clienturl.ClientURL(ctx).String())
			return next.Close(ctx, conn)
		},
	}
	srv := chain.NewServer(clienturl.NewServer(u), record)
	conn, err := srv.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	want := []string{"request tcp://127.0.0.1:5001", "close tcp://127.0.0.1:5001"}
	if len(seen) != 2 || seen[0] != want[0] || seen[1] != want[1] {
		t.Fatalf("seen %v, want %v", seen, want)
	}
}
