package chain_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
)

// passthrough is the trivial element: it only calls next.
type passthrough struct{}

func (*passthrough) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	return next.Request(ctx, req)
}

func (*passthrough) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	return next.Close(ctx, conn)
}

// withState is a trivial element that uses the metadata store: it keeps a
// counter per connection under a key of its own.
type withState struct {
	key *chain.Key[*int]
}

func (e withState) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextServer) (*networkservice.Connection, error) {
	n, ok := e.key.Load(ctx)
	if !ok {
		n = new(int)
		e.key.Store(ctx, n)
	}
	*n++
	return next.Request(ctx, req)
}

func (e withState) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextServer) (*emptypb.Empty, error) {
	e.key.Delete(ctx)
	return next.Close(ctx, conn)
}

type clientPassthrough struct{}

func (*clientPassthrough) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *chain.NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return next.Request(ctx, req, opts...)
}

func (*clientPassthrough) Close(ctx context.Context, conn *networkservice.Connection, next *chain.NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Close(ctx, conn, opts...)
}

var benchKeys = func() []*chain.Key[*int] {
	keys := make([]*chain.Key[*int], 50)
	for i := range keys {
		keys[i] = chain.NewKey[*int]("bench-" + strconv.Itoa(i))
	}
	return keys
}()

func benchServer(n int, metadata bool, extra ...chain.ServerElement) networkservice.NetworkServiceServer {
	elems := append([]chain.ServerElement{}, extra...)
	for i := range n {
		if metadata {
			elems = append(elems, withState{key: benchKeys[i]})
		} else {
			elems = append(elems, &passthrough{})
		}
	}
	return chain.NewServer(elems...)
}

var benchModes = []struct {
	name     string
	metadata bool
}{{"plain", false}, {"metadata", true}}

// BenchmarkServerChain is one refresh Request through a chain of n trivial
// elements, head included.
func BenchmarkServerChain(b *testing.B) {
	for _, mode := range benchModes {
		for _, n := range []int{1, 10, 50} {
			b.Run(fmt.Sprintf("%s/elements=%d", mode.name, n), func(b *testing.B) {
				srv := benchServer(n, mode.metadata)
				ctx := context.Background()
				req := request("bench")
				b.ReportAllocs()
				for b.Loop() {
					if _, err := srv.Request(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkServerHop reports the cost of one element: the difference between
// chains of 50 and 10 trivial elements, divided by 40, measured in one run.
func BenchmarkServerHop(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			req := request("bench")
			short, long := benchServer(10, mode.metadata), benchServer(50, mode.metadata)
			run := func(srv networkservice.NetworkServiceServer) func() {
				return func() {
					if _, err := srv.Request(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportHop(b, run(short), run(long))
		})
	}
	b.Run("logger-at-info", func(b *testing.B) {
		logger := logrus.New()
		logger.SetLevel(logrus.InfoLevel)
		ctx := context.Background()
		req := request("bench")
		marker := chain.Logger(logrus.NewEntry(logger))
		short, long := benchServer(10, false, marker), benchServer(50, false, marker)
		reportHop(b,
			func() { _, _ = short.Request(ctx, req) },
			func() { _, _ = long.Request(ctx, req) })
	})
}

// reportHop times short and long (chains of 10 and 50 elements) alternately
// and reports the difference per element.
func reportHop(b *testing.B, short, long func()) {
	b.Helper()
	b.ReportAllocs()
	var tShort, tLong time.Duration
	for b.Loop() {
		s := time.Now()
		short()
		m := time.Now()
		long()
		tLong += time.Since(m)
		tShort += m.Sub(s)
	}
	allocs := testing.AllocsPerRun(1000, long) - testing.AllocsPerRun(1000, short)
	b.ReportMetric(float64(tLong-tShort)/float64(b.N)/40, "ns/hop")
	b.ReportMetric(allocs/40, "allocs/hop")
}

// BenchmarkServerConnection is a whole connection: first Request and Close of
// a new ID, through ten trivial elements using the store.
func BenchmarkServerConnection(b *testing.B) {
	srv := benchServer(10, true)
	ctx := context.Background()
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := request(ids[i%len(ids)])
		i++
		conn, err := srv.Request(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := srv.Close(ctx, conn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientHop is BenchmarkServerHop for client chains, with a call
// option passed through every element.
func BenchmarkClientHop(b *testing.B) {
	build := func(n int) networkservice.NetworkServiceClient {
		elems := make([]chain.ClientElement, n)
		for i := range elems {
			elems[i] = &clientPassthrough{}
		}
		return chain.NewClient(elems...)
	}
	ctx := context.Background()
	req := request("bench")
	opt := grpc.WaitForReady(true)
	short, long := build(10), build(50)
	reportHop(b,
		func() { _, _ = short.Request(ctx, req, opt) },
		func() { _, _ = long.Request(ctx, req, opt) })
}
