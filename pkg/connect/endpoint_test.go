package connect_test

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tether-mesh/tether/pkg/chain"
	"github.com/tether-mesh/tether/pkg/checkrequest"
	"github.com/tether-mesh/tether/pkg/refcount"
)

const testTimeout = 10 * time.Second

// countingListener counts the transport connections a server accepts and
// how many are open.
type countingListener struct {
	net.Listener
	accepted, open atomic.Int64
	changed        chan struct{} // pinged on every accept and close
}

func (l *countingListener) ping() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	l.open.Add(1)
	l.ping()
	return &countedConn{Conn: c, l: l}, nil
}

// waitOpen waits until n transport connections are open at the server.
func (l *countingListener) waitOpen(t *testing.T, n int64) {
	t.Helper()
	timeout := time.After(testTimeout)
	for l.open.Load() != n {
		select {
		case <-l.changed:
		case <-timeout:
			t.Fatalf("%d transport connections open at the server, want %d", l.open.Load(), n)
		}
	}
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.ping()
	})
	return c.Conn.Close()
}

// ledger is the end of an endpoint's chain: it remembers the connections
// open at the endpoint.
type ledger struct {
	mu               sync.Mutex
	open             map[string]bool
	requests, closes int
}

func (l *ledger) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open[req.GetConnection().GetId()] = true
	l.requests++
	conn := req.GetConnection()
	conn.Payload = "served"
	return conn, nil
}

func (l *ledger) Close(_ context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.open, conn.GetId())
	l.closes++
	return &emptypb.Empty{}, nil
}

func (l *ledger) counts() (open, requests, closes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open), l.requests, l.closes
}

// endpoint is a real gRPC NetworkService server on a unix socket or TCP.
type endpoint struct {
	t      *testing.T
	url    *url.URL
	lis    *countingListener
	srv    *grpc.Server
	ledger *ledger
	done   chan struct{}
}

// startEndpoint serves on network ("unix" or "tcp") at addr ("" picks one).
func startEndpoint(t *testing.T, network, addr string) *endpoint {
	t.Helper()
	if addr == "" {
		if network == "unix" {
			addr = filepath.Join(t.TempDir(), "ep.sock")
		} else {
			addr = "127.0.0.1:0"
		}
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{t: t, lis: &countingListener{Listener: lis, changed: make(chan struct{}, 1)}, ledger: &ledger{open: map[string]bool{}}, done: make(chan struct{})}
	if network == "unix" {
		e.url = &url.URL{Scheme: "unix", Path: addr}
	} else {
		e.url = &url.URL{Scheme: "tcp", Host: lis.Addr().String()}
	}
	e.srv = grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(e.srv, chain.NewServer(checkrequest.NewServer(), refcount.NewServer(), chain.Tail(e.ledger)))
	go func() {
		defer close(e.done)
		_ = e.srv.Serve(e.lis)
	}()
	t.Cleanup(e.stop)
	return e
}

// stop kills the server at once, connections and all.
func (e *endpoint) stop() {
	e.srv.Stop()
	<-e.done
}

// addr is what startEndpoint needs to listen at the same place again.
func (e *endpoint) addr() string {
	if e.url.Scheme == "unix" {
		return e.url.Path
	}
	return e.url.Host
}
