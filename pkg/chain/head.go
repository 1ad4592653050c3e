package chain

import (
	"context"

	"github.com/google/uuid"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// NewServer links elements into a server chain behind a head that
// serializes each connection's events and keeps its metadata (see the
// package documentation). A chain without a Tail ends by returning the
// request's connection.
func NewServer(elements ...ServerElement) networkservice.NetworkServiceServer {
	s := &server{}
	s.plain = linkServers(elements, nil, linkConfig{})
	logged := linkServers(elements, nil, linkConfig{logging: true, loggers: &s.loggers})
	if len(s.loggers) > 0 {
		s.logged = logged
	}
	return s
}

// NewClient links elements into a client chain behind a head like
// NewServer's. A request without a connection ID gets a fresh one (a UUID)
// before the first element runs; the caller's request carries it afterwards.
func NewClient(elements ...ClientElement) networkservice.NetworkServiceClient {
	c := &client{}
	c.plain = linkClients(elements, nil, linkConfig{})
	logged := linkClients(elements, nil, linkConfig{logging: true, loggers: &c.loggers})
	if len(c.loggers) > 0 {
		c.logged = logged
	}
	return c
}

type server struct {
	conns   conns
	plain   *NextServer
	logged  *NextServer
	loggers []*logrus.Logger
}

func (s *server) first() *NextServer {
	if debugEnabled(s.loggers) {
		return s.logged
	}
	return s.plain
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if err := checkID(req.GetConnection()); err != nil {
		return nil, err
	}
	e, err := s.conns.acquire(ctx, req.GetConnection().GetId(), s)
	if err != nil {
		return nil, err
	}
	return s.request(ctx, e, req)
}

// request runs a Request event on the locked entry e and releases it.
func (s *server) request(ctx context.Context, e *entry, req *networkservice.NetworkServiceRequest) (resp *networkservice.Connection, err error) {
	ok := false
	defer func() {
		if !ok { // an element panicked: free the ID for the events after
			s.conns.afterRequest(e, req, nil, nil, errPanicked)
		}
	}()
	resp, err = s.first().Request(newEventContext(ctx, e), req)
	ok = true
	s.conns.afterRequest(e, req, nil, resp, err)
	return resp, err
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if err := checkID(conn); err != nil {
		return nil, err
	}
	e, err := s.conns.acquire(ctx, conn.GetId(), s)
	if err != nil {
		return nil, err
	}
	return s.close(ctx, e, conn)
}

// close runs a Close event on the locked entry e, removes it and releases it.
func (s *server) close(ctx context.Context, e *entry, conn *networkservice.Connection) (*emptypb.Empty, error) {
	defer s.conns.afterClose(e)
	return s.first().Close(newEventContext(ctx, e), conn)
}

func (s *server) reRequest(ctx context.Context, e *entry, req *networkservice.NetworkServiceRequest, _ []grpc.CallOption) (*networkservice.Connection, error) {
	return s.request(ctx, e, req)
}

func (s *server) reClose(ctx context.Context, e *entry, conn *networkservice.Connection, _ []grpc.CallOption) error {
	_, err := s.close(ctx, e, conn)
	return err
}

func (s *server) handles() []Handle { return s.conns.handles() }

func (s *server) Connections() int {
	return int(s.conns.count.Load())
}

type client struct {
	conns   conns
	plain   *NextClient
	logged  *NextClient
	loggers []*logrus.Logger
}

func (c *client) first() *NextClient {
	if debugEnabled(c.loggers) {
		return c.logged
	}
	return c.plain
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	if req == nil {
		return nil, status.Error(codes.InvalidArgument, "request is nil")
	}
	if req.GetConnection() == nil {
		req.Connection = &networkservice.Connection{}
	}
	if req.GetConnection().GetId() == "" {
		req.GetConnection().Id = uuid.NewString()
	}
	e, err := c.conns.acquire(ctx, req.GetConnection().GetId(), c)
	if err != nil {
		return nil, err
	}
	return c.request(ctx, e, req, opts)
}

func (c *client) request(ctx context.Context, e *entry, req *networkservice.NetworkServiceRequest, opts []grpc.CallOption) (resp *networkservice.Connection, err error) {
	ok := false
	defer func() {
		if !ok {
			c.conns.afterRequest(e, req, nil, nil, errPanicked)
		}
	}()
	resp, err = c.first().Request(newEventContext(ctx, e), req, opts...)
	ok = true
	c.conns.afterRequest(e, req, opts, resp, err)
	return resp, err
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if err := checkID(conn); err != nil {
		return nil, err
	}
	e, err := c.conns.acquire(ctx, conn.GetId(), c)
	if err != nil {
		return nil, err
	}
	return c.close(ctx, e, conn, opts)
}

func (c *client) close(ctx context.Context, e *entry, conn *networkservice.Connection, opts []grpc.CallOption) (*emptypb.Empty, error) {
	defer c.conns.afterClose(e)
	return c.first().Close(newEventContext(ctx, e), conn, opts...)
}

func (c *client) reRequest(ctx context.Context, e *entry, req *networkservice.NetworkServiceRequest, opts []grpc.CallOption) (*networkservice.Connection, error) {
	return c.request(ctx, e, req, opts)
}

func (c *client) reClose(ctx context.Context, e *entry, conn *networkservice.Connection, opts []grpc.CallOption) error {
	_, err := c.close(ctx, e, conn, opts)
	return err
}

func (c *client) handles() []Handle { return c.conns.handles() }

func (c *client) Connections() int {
	return int(c.conns.count.Load())
}

// checkID refuses a connection a head cannot key its state by.
func checkID(conn *networkservice.Connection) error {
	if conn == nil {
		return status.Error(codes.InvalidArgument, "request has no connection")
	}
	if conn.GetId() == "" {
		return status.Error(codes.InvalidArgument, "connection ID is empty")
	}
	return nil
}

func debugEnabled(loggers []*logrus.Logger) bool {
	for _, l := range loggers {
		if l.IsLevelEnabled(logrus.DebugLevel) {
			return true
		}
	}
	return false
}
