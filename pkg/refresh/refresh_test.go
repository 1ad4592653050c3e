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
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/refresh"
	"github.com/tether-mesh/tether/pkg/updatepath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

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

// TestRefreshBeforeTheEarliestSegmentExpires checks that the refresh comes
// before the first of the segments from the client's own on expires, not
// only its own: a hop after the client (a forwarder) may live shorter.
func TestRefreshBeforeTheEarliestSegmentExpires(t *testing.T) {
	t.Parallel()
	const short, long = 300 * time.Millisecond, time.Hour
	for _, tc := range []struct {
		name      string
		own, next time.Duration // the client's lifetime, the next hop's (0: none)
	}{
		{"own segment first", short, long},
		{"next hop first", long, short},
		{"next hop without expiry", short, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			requests := make(chan struct{}, 100)
			far := chain.ClientFuncs{RequestFunc: func(_ context.Context, req *networkservice.NetworkServiceRequest, _ *chain.NextClient, _ ...grpc.CallOption) (*networkservice.Connection, error) {
				requests <- struct{}{}
				conn := req.GetConnection().Clone()
				p := conn.GetPath()
				next := &networkservice.PathSegment{Name: "forwarder", Id: "f1"}
				if tc.next != 0 {
					next.Expires = timestamppb.New(time.Now().Add(tc.next))
				}
				p.PathSegments = append(p.PathSegments[:p.GetIndex()+1], next)
				return conn, nil
			}}
			cl := chain.NewClient(refresh.NewClient(), updatepath.NewClient("client", updatepath.WithLifetime(tc.own)), far)
			conn, err := cl.Request(context.Background(), &networkservice.NetworkServiceRequest{})
			if err != nil {
				t.Fatal(err)
			}
			<-requests
			select {
			case <-requests:
			case <-time.After(testTimeout):
				t.Fatalf("no refresh within %v; the first segment expires in %v", testTimeout, short)
			}
			if _, err := cl.Close(context.Background(), conn); err != nil {
				t.Fatal(err)
			}
		})
	}
}
