package e2e

import (
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/expire"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/tcp"
)

// TestAnNSMClient talks to the forwarder as a client built with NSM's sdk
// does, with the generated gRPC stub and nothing of tether's client: its
// own path segment carries no expiry (NSM's client leaves that to the
// first server), it refreshes by sending back the connection it got, and
// it closes with that connection, here also with a path an element broke
// and with none.
// It checks that the path comes back as NSM's refresh needs it, that the
// channel the mechanism names works, and that nothing is left behind.
func TestAnNSMClient(t *testing.T) {
	sb, fwd := group(t, "tcp")
	stub := forwarderStub(t, fwd)
	ctx := sb.Context()

	for _, tc := range []struct {
		name      string
		breakPath func(p *networkservice.Path) // before the Close; nil leaves it
	}{
		{"close with its path", nil},
		{"close with a broken path", func(p *networkservice.Path) { p.Index = 7 }},
		{"close without a path", func(p *networkservice.Path) { p.PathSegments, p.Index = nil, 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "nsc-" + tc.name
			req := &networkservice.NetworkServiceRequest{
				Connection: &networkservice.Connection{
					Id: id, NetworkService: "echo",
					Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "nsc", Id: id}}},
				},
				MechanismPreferences: []*networkservice.Mechanism{rdma.Preference("tcp")},
			}
			before := time.Now()
			conn, err := stub.Request(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			checkPath(t, conn, id, before)

			// The channel the mechanism names answers calls.
			b, err := rdma.ParseBinding(conn.GetMechanism())
			if err != nil {
				t.Fatal(err)
			}
			ch, err := tcp.New().Dial(ctx, b.Address, b.ConnID, b.Secret)
			if err != nil {
				t.Fatal(err)
			}
			caller := call.NewCaller(logrus.NewEntry(logrus.StandardLogger()))
			caller.Bind(ch, nil, nil)
			if reply, err := caller.Call(ctx, nil, []byte("from nsm")); err != nil || string(reply) != "from nsm" {
				t.Fatalf("call: %q %v", reply, err)
			}

			// A refresh as NSM's client sends it: the connection it got.
			again, err := stub.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn.Clone(), MechanismPreferences: req.GetMechanismPreferences()})
			if err != nil {
				t.Fatal(err)
			}
			checkPath(t, again, id, before)
			for i, seg := range again.GetPath().GetPathSegments() {
				if want := conn.GetPath().GetPathSegments()[i]; seg.GetName() != want.GetName() || seg.GetId() != want.GetId() {
					t.Fatalf("the refresh changed segment %d: %v, was %v", i, seg, want)
				}
			}
			if got := again.GetMechanism().GetParameters()[rdma.ParamAddress]; got != b.Address {
				t.Fatalf("the refresh moved the channel to %q from %q", got, b.Address)
			}
			if reply, err := caller.Call(ctx, nil, []byte("after refresh")); err != nil || string(reply) != "after refresh" {
				t.Fatalf("call after the refresh: %q %v", reply, err)
			}

			closing := again.Clone()
			if tc.breakPath != nil {
				tc.breakPath(closing.GetPath())
			}
			if _, err := stub.Close(ctx, closing); err != nil {
				t.Fatalf("Close: %v", err)
			}
			caller.Close()
			_ = ch.Close()
			fwd.WaitConnections(0)
			for _, m := range sb.Members() {
				m.WaitConnections(0)
			}
		})
	}
}

// checkPath checks the path of a connection the forwarder returned to an
// NSM client that sent the one segment "nsc" at before: the client's view
// (index 0, its own ID), a segment for the forwarder and one for the
// member, and an expiry on the client's segment that NSM's refresh can
// use: the forwarder's default lifetime from the request, which the
// forwarder enforces.
func checkPath(t *testing.T, conn *networkservice.Connection, id string, before time.Time) {
	t.Helper()
	p := conn.GetPath()
	segs := p.GetPathSegments()
	if p.GetIndex() != 0 || conn.GetId() != id || len(segs) != 3 || segs[0].GetName() != "nsc" || segs[0].GetId() != id {
		t.Fatalf("the client's view of the path: id %q, %v", conn.GetId(), p)
	}
	for i, seg := range segs {
		if seg.GetExpires() == nil {
			t.Fatalf("segment %d (%s) has no expiry", i, seg.GetName())
		}
	}
	at := segs[0].GetExpires().AsTime()
	if lo, hi := before.Add(expire.DefaultLifetime), time.Now().Add(expire.DefaultLifetime); at.Before(lo) || at.After(hi) {
		t.Fatalf("the client's segment expires at %v, want the forwarder's deadline in [%v, %v]", at, lo, hi)
	}
}
