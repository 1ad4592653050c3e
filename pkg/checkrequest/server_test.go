package checkrequest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/checkrequest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func manyEntries(n, keyLen, valLen int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		k := fmt.Sprintf("k%0*d", max(keyLen-1, 1), i)
		m[k] = strings.Repeat("v", valLen)
	}
	return m
}

func valid() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{
			Id:             "c1",
			NetworkService: "group-a",
			Labels:         map[string]string{"app": "demo"},
			Path:           &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "client", Id: "c1"}}},
		},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: "LOCAL", Type: "RDMA", Parameters: map[string]string{"provider": "shm"}}},
	}
}

// recorder ends the chain and counts what reached it.
type recorder struct {
	requests, closes int
}

func (r *recorder) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	r.requests++
	return req.GetConnection(), nil
}

func (r *recorder) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	r.closes++
	return &emptypb.Empty{}, nil
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	limits := checkrequest.DefaultLimits
	tests := []struct {
		name   string
		mutate func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest
		want   string
	}{
		{"no connection", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection = nil
			return r
		}, "request has no connection"},
		{"empty ID", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Id = ""
			return r
		}, "connection ID is empty"},
		{"oversized ID", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Id = strings.Repeat("x", limits.MaxIDBytes+1)
			return r
		}, "connection ID is 257 bytes, more than the limit of 256"},
		{"too many labels", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Labels = manyEntries(limits.MaxEntries+1, 4, 1)
			return r
		}, "connection labels have 65 entries, more than the limit of 64"},
		{"oversized label value", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Labels = map[string]string{"big": strings.Repeat("v", limits.MaxValueBytes+1)}
			return r
		}, `connection labels: value of "big" is 4097 bytes, more than the limit of 4096`},
		{"oversized label key", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Labels = map[string]string{strings.Repeat("k", limits.MaxKeyBytes+1): "v"}
			return r
		}, "connection labels: key"},
		{"oversized mechanism parameter", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.MechanismPreferences[0].Parameters["addr"] = strings.Repeat("a", limits.MaxValueBytes+1)
			return r
		}, `mechanism preference 0 parameters: value of "addr" is 4097 bytes`},
		{"too many mechanism parameters", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Mechanism = &networkservice.Mechanism{Type: "RDMA", Parameters: manyEntries(limits.MaxEntries+1, 4, 1)}
			return r
		}, "connection mechanism parameters have 65 entries"},
		{"empty mechanism preference", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.MechanismPreferences = append(r.MechanismPreferences, nil)
			return r
		}, "mechanism preference 1 is empty"},
		{"too many mechanism preferences", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			for range limits.MaxMechanisms {
				r.MechanismPreferences = append(r.MechanismPreferences, &networkservice.Mechanism{Type: "RDMA"})
			}
			return r
		}, "request has 17 mechanism preferences, more than the limit of 16"},
		{"oversized network service", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.NetworkService = strings.Repeat("g", limits.MaxNameBytes+1)
			return r
		}, "network service is 254 bytes"},
		{"path index out of range", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Path.Index = 3
			return r
		}, "path index 3 is out of its 1 segments"},
		{"too many path segments", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			for range limits.MaxPathSegments {
				r.Connection.Path.PathSegments = append(r.Connection.Path.PathSegments, &networkservice.PathSegment{Name: "hop"})
			}
			return r
		}, "path has 33 segments, more than the limit of 32"},
		{"empty path segment", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Path.PathSegments = append(r.Connection.Path.PathSegments, nil)
			return r
		}, "path segment 1 is empty"},
		{"oversized path metrics", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			r.Connection.Path.PathSegments[0].Metrics = manyEntries(limits.MaxEntries+1, 4, 1)
			return r
		}, "path segment 0 metrics have 65 entries"},
		{"oversized whole request", func(r *networkservice.NetworkServiceRequest) *networkservice.NetworkServiceRequest {
			for i := range limits.MaxMechanisms - 1 {
				r.MechanismPreferences = append(r.MechanismPreferences, &networkservice.Mechanism{Type: "RDMA", Parameters: manyEntries(limits.MaxEntries, 8, limits.MaxValueBytes/64+i)})
			}
			return r
		}, "more than the limit of 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			srv := chain.NewServer(checkrequest.NewServer(), chain.Tail(rec))
			_, err := srv.Request(context.Background(), tt.mutate(valid()))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code %v (%v), want InvalidArgument", status.Code(err), err)
			}
			if !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Fatalf("message %q does not say %q", status.Convert(err).Message(), tt.want)
			}
			if rec.requests != 0 {
				t.Fatal("a refused request went on down the chain")
			}
			if n := srv.(chain.ConnectionCounter).Connections(); n != 0 {
				t.Fatalf("a refused request left %d connections", n)
			}
		})
	}
}

func TestValidRequestPasses(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := chain.NewServer(checkrequest.NewServer(), chain.Tail(rec))
	conn, err := srv.Request(context.Background(), valid())
	if err != nil {
		t.Fatal(err)
	}
	// A bad refresh is refused and leaves the connection as it was.
	bad := valid()
	bad.Connection.Labels = manyEntries(100, 4, 1)
	if _, err := srv.Request(context.Background(), bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad refresh: %v", err)
	}
	if n := srv.(chain.ConnectionCounter).Connections(); n != 1 {
		t.Fatalf("a refused refresh changed the connection count to %d", n)
	}
	// A Close carrying oversized labels still reaches the elements that
	// release the connection.
	conn.Labels = manyEntries(100, 4, 1)
	if _, err := srv.Close(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if rec.requests != 1 || rec.closes != 1 {
		t.Fatalf("requests %d closes %d, want 1 and 1", rec.requests, rec.closes)
	}
	if n := srv.(chain.ConnectionCounter).Connections(); n != 0 {
		t.Fatalf("%d connections after close", n)
	}
}

func TestBadCloses(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := chain.NewServer(checkrequest.NewServer(), chain.Tail(rec))
	for _, conn := range []*networkservice.Connection{nil, {}, {Id: strings.Repeat("x", 300)}} {
		if _, err := srv.Close(context.Background(), conn); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("close of %v: %v", conn, err)
		}
	}
	if rec.closes != 0 || srv.(chain.ConnectionCounter).Connections() != 0 {
		t.Fatal("a refused close went down the chain or left state")
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	srv := chain.NewServer(checkrequest.NewServer(checkrequest.WithMaxEntries(1), checkrequest.WithMaxValueBytes(2)))
	req := valid()
	req.Connection.Labels = map[string]string{"a": "1", "b": "2"}
	if _, err := srv.Request(context.Background(), req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("two labels over a limit of one: %v", err)
	}
	srv = chain.NewServer(checkrequest.NewServer(checkrequest.WithLimits(checkrequest.DefaultLimits), checkrequest.WithMaxRequestBytes(10)))
	if _, err := srv.Request(context.Background(), valid()); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a request over 10 bytes: %v", err)
	}
}
