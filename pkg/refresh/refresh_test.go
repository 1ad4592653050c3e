package refresh_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/refresh"
	"github.com/tether-mesh/tether/pkg/updatepath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFailingRefreshesStopAtTheExpiry(t *testing.T) {
	t.Parallel()
	const lifetime = 300 * time.Millisecond
	var attempts atomic.Int32
	far := chain.ClientFuncs{RequestFunc: func(_ context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextClient, _ ...grpc.CallOption) (*networkservice.Connection, error) {
		n := attempts.Add(1)
		if n == 1 {
			return req.GetConnection(), nil
		}
		if exp := req.GetConnection().GetPath().GetPathSegments()[0].GetExpires().AsTime(); n > 1 && time.Until(exp) < 0 {
			t.Error("refreshed after the expiry")
		}
		return nil, errors.New("far end is gone")
	}}
	cl := chain.NewClient(refresh.NewClient(), updatepath.NewClient("client", updatepath.WithLifetime(lifetime)), far)
	conn, err := cl.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	expires := conn.GetPath().GetPathSegments()[0].GetExpires().AsTime()
	// Retries come at a third of the remaining time: a handful before the
	// expiry, none after it. Look a lifetime past the expiry.
	<-time.After(time.Until(expires.Add(lifetime)))
	n := attempts.Load()
	if n < 3 || n > 20 {
		t.Fatalf("%d attempts in the lifetime, want a few retries", n)
	}
	if _, err := cl.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if attempts.Load() != n {
		t.Fatal("attempts continued after the expiry")
	}
}
