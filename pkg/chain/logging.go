package chain

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Logger is a marker element for server chains: when log's logger is at
// debug level, every element after the marker logs what it changed in the
// request on its way down and in the connection on its way back up, with the
// fields conn_id and element. A chain with a marker is linked twice, with and
// without logging, and picks one per call by the logger's level: below debug
// the marker costs one level check per call and nothing per hop.
func Logger(log *logrus.Entry) ServerElement {
	return &loggerMarker{log: log}
}

// ClientLogger is Logger for client chains.
func ClientLogger(log *logrus.Entry) ClientElement {
	return &clientLoggerMarker{loggerMarker{log: log}}
}

type loggerMarker struct {
	log *logrus.Entry
}

func (m *loggerMarker) marker() *logrus.Entry { return m.log }

func (m *loggerMarker) linkServer(next *NextServer, _ linkConfig) *NextServer { return next }

func (m *loggerMarker) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error) {
	return next.Request(ctx, req)
}

func (m *loggerMarker) Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error) {
	return next.Close(ctx, conn)
}

type clientLoggerMarker struct {
	loggerMarker
}

func (m *clientLoggerMarker) linkClient(next *NextClient, _ linkConfig) *NextClient { return next }

func (m *clientLoggerMarker) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return next.Request(ctx, req, opts...)
}

func (m *clientLoggerMarker) Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Close(ctx, conn, opts...)
}

// elementLog records one element's passage for the debug log.
type elementLog struct {
	log      *logrus.Entry
	name     string
	before   *networkservice.NetworkServiceRequest // as it reached the element
	called   bool                                  // the element called next
	fromNext *networkservice.Connection            // as next returned it
}

func (l *elementLog) fields(id string) *logrus.Entry {
	return l.log.WithFields(logrus.Fields{"conn_id": id, "element": l.name})
}

// down logs what the element changed before it called next.
func (l *elementLog) down(req *networkservice.NetworkServiceRequest) {
	l.called = true
	if c := changes(l.before, req); len(c) > 0 {
		l.fields(req.GetConnection().GetId()).WithField("changes", c).Debug("request changed")
	}
}

// up logs what the element changed in the response, or how it ended the
// request when it did not call next.
func (l *elementLog) up(resp *networkservice.Connection, err error) {
	f := l.fields(l.before.GetConnection().GetId())
	switch {
	case !l.called && err != nil:
		f.WithError(err).Debug("request refused")
	case !l.called:
		f.WithField("changes", changes(l.before.GetConnection(), resp)).Debug("request ended here")
	case err != nil:
		f.WithError(err).Debug("request failed")
	default:
		if c := changes(l.fromNext, resp); len(c) > 0 {
			f.WithField("changes", c).Debug("response changed")
		}
	}
}

func logClose(log *logrus.Entry, name string, before, conn *networkservice.Connection, err error) {
	f := log.WithFields(logrus.Fields{"conn_id": before.GetId(), "element": name})
	if c := changes(before, conn); len(c) > 0 {
		f = f.WithField("changes", c)
	}
	if err != nil {
		f.WithError(err).Debug("close failed")
		return
	}
	f.Debug("close")
}

// serverLogElement wraps an element of a chain linked for debug logging.
type serverLogElement struct {
	elem ServerElement
	log  *logrus.Entry
	name string
}

func (l *serverLogElement) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error) {
	if !l.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return l.elem.Request(ctx, req, next)
	}
	el := &elementLog{log: l.log, name: l.name, before: req.Clone()}
	resp, err := l.elem.Request(ctx, req, &NextServer{elem: serverLogNext{el}, next: next})
	el.up(resp, err)
	return resp, err
}

func (l *serverLogElement) Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error) {
	if !l.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return l.elem.Close(ctx, conn, next)
	}
	before := conn.Clone()
	resp, err := l.elem.Close(ctx, conn, next)
	logClose(l.log, l.name, before, conn, err)
	return resp, err
}

// serverLogNext stands between a logged element and its next.
type serverLogNext struct {
	el *elementLog
}

func (n serverLogNext) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextServer) (*networkservice.Connection, error) {
	n.el.down(req)
	resp, err := next.Request(ctx, req)
	n.el.fromNext = resp.Clone()
	return resp, err
}

func (n serverLogNext) Close(ctx context.Context, conn *networkservice.Connection, next *NextServer) (*emptypb.Empty, error) {
	return next.Close(ctx, conn)
}

type clientLogElement struct {
	elem ClientElement
	log  *logrus.Entry
	name string
}

func (l *clientLogElement) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	if !l.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return l.elem.Request(ctx, req, next, opts...)
	}
	el := &elementLog{log: l.log, name: l.name, before: req.Clone()}
	resp, err := l.elem.Request(ctx, req, &NextClient{elem: clientLogNext{el}, next: next}, opts...)
	el.up(resp, err)
	return resp, err
}

func (l *clientLogElement) Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if !l.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return l.elem.Close(ctx, conn, next, opts...)
	}
	before := conn.Clone()
	resp, err := l.elem.Close(ctx, conn, next, opts...)
	logClose(l.log, l.name, before, conn, err)
	return resp, err
}

type clientLogNext struct {
	el *elementLog
}

func (n clientLogNext) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, next *NextClient, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	n.el.down(req)
	resp, err := next.Request(ctx, req, opts...)
	n.el.fromNext = resp.Clone()
	return resp, err
}

func (n clientLogNext) Close(ctx context.Context, conn *networkservice.Connection, next *NextClient, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Close(ctx, conn, opts...)
}
