package checkrequest

import (
	"fmt"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// CheckRequest returns nil when req is within l, and otherwise an
// InvalidArgument status that names the first thing wrong.
func (l Limits) CheckRequest(req *networkservice.NetworkServiceRequest) error {
	if req == nil {
		return invalid("request is nil")
	}
	if req.GetConnection() == nil {
		return invalid("request has no connection")
	}
	if n := proto.Size(req); n > l.MaxRequestBytes {
		return invalid("request is %d bytes, more than the limit of %d", n, l.MaxRequestBytes)
	}
	if err := l.checkConnection(req.GetConnection()); err != nil {
		return err
	}
	prefs := req.GetMechanismPreferences()
	if len(prefs) > l.MaxMechanisms {
		return invalid("request has %d mechanism preferences, more than the limit of %d", len(prefs), l.MaxMechanisms)
	}
	for i, m := range prefs {
		if m == nil {
			return invalid("mechanism preference %d is empty", i)
		}
		if err := l.checkMechanism(fmt.Sprintf("mechanism preference %d", i), m); err != nil {
			return err
		}
	}
	return nil
}

// CheckClose returns nil when conn, as a Close carries it, names a
// connection. Only what identifies the connection is checked: a Close must
// always reach the elements that release what the connection holds, and they
// find it by its ID.
func (l Limits) CheckClose(conn *networkservice.Connection) error {
	if conn == nil {
		return invalid("close has no connection")
	}
	return l.checkID(conn.GetId())
}

func (l Limits) checkID(id string) error {
	switch {
	case id == "":
		return invalid("connection ID is empty")
	case len(id) > l.MaxIDBytes:
		return invalid("connection ID is %d bytes, more than the limit of %d", len(id), l.MaxIDBytes)
	}
	return nil
}

func (l Limits) checkConnection(conn *networkservice.Connection) error {
	if err := l.checkID(conn.GetId()); err != nil {
		return err
	}
	if err := l.checkName("network service", conn.GetNetworkService()); err != nil {
		return err
	}
	if err := l.checkName("network service endpoint name", conn.GetNetworkServiceEndpointName()); err != nil {
		return err
	}
	if err := l.checkName("payload", conn.GetPayload()); err != nil {
		return err
	}
	if err := l.checkEntries("connection labels", conn.GetLabels()); err != nil {
		return err
	}
	if m := conn.GetMechanism(); m != nil {
		if err := l.checkMechanism("connection mechanism", m); err != nil {
			return err
		}
	}
	return l.checkPath(conn.GetPath())
}

func (l Limits) checkMechanism(what string, m *networkservice.Mechanism) error {
	if err := l.checkName(what+" type", m.GetType()); err != nil {
		return err
	}
	if err := l.checkName(what+" class", m.GetCls()); err != nil {
		return err
	}
	return l.checkEntries(what+" parameters", m.GetParameters())
}

func (l Limits) checkPath(p *networkservice.Path) error {
	segs := p.GetPathSegments()
	if len(segs) > l.MaxPathSegments {
		return invalid("path has %d segments, more than the limit of %d", len(segs), l.MaxPathSegments)
	}
	if len(segs) > 0 && int(p.GetIndex()) >= len(segs) {
		return invalid("path index %d is out of its %d segments", p.GetIndex(), len(segs))
	}
	for i, s := range segs {
		if s == nil {
			return invalid("path segment %d is empty", i)
		}
		if len(s.GetId()) > l.MaxIDBytes {
			return invalid("path segment %d ID is %d bytes, more than the limit of %d", i, len(s.GetId()), l.MaxIDBytes)
		}
		if err := l.checkName(fmt.Sprintf("path segment %d name", i), s.GetName()); err != nil {
			return err
		}
		if len(s.GetToken()) > l.MaxValueBytes {
			return invalid("path segment %d token is %d bytes, more than the limit of %d", i, len(s.GetToken()), l.MaxValueBytes)
		}
		if err := l.checkEntries(fmt.Sprintf("path segment %d metrics", i), s.GetMetrics()); err != nil {
			return err
		}
	}
	return nil
}

func (l Limits) checkName(what, name string) error {
	if len(name) > l.MaxNameBytes {
		return invalid("%s is %d bytes, more than the limit of %d", what, len(name), l.MaxNameBytes)
	}
	return nil
}

func (l Limits) checkEntries(what string, m map[string]string) error {
	if len(m) > l.MaxEntries {
		return invalid("%s have %d entries, more than the limit of %d", what, len(m), l.MaxEntries)
	}
	for k, v := range m {
		if len(k) > l.MaxKeyBytes {
			return invalid("%s: key %.32q... is %d bytes, more than the limit of %d", what, k, len(k), l.MaxKeyBytes)
		}
		if len(v) > l.MaxValueBytes {
			return invalid("%s: value of %q is %d bytes, more than the limit of %d", what, k, len(v), l.MaxValueBytes)
		}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
