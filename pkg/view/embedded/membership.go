package embedded

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
)

// membership is a member joined in-process.
type membership struct {
	p   *Provider
	rec *member
}

func (m *membership) Group() string         { return m.rec.g.name }
func (m *membership) Member() view.Member   { return m.rec.m }
func (m *membership) Done() <-chan struct{} { return m.rec.done }
func (m *membership) Leave(context.Context) error {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	if m.p.remove(m.rec, view.ErrLeft) {
		m.rec.g.stats.Leaves++
		m.p.opts.log.WithFields(logrus.Fields{"group": m.rec.g.name, "member": m.rec.m.ID, "incarnation": m.rec.m.Incarnation}).Info("member left")
	}
	return nil
}

func (m *membership) Err() error {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	return m.rec.err
}

// Lease is a membership kept alive by heartbeats (Renew). It is a
// view.Membership.
type Lease struct {
	membership
}

// Renew extends the lease by the lease time from now. It returns the
// membership's end (Err) when the membership has ended.
func (l *Lease) Renew() error {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.rec.ended {
		return l.rec.err
	}
	l.rec.expires = p.opts.clock.Now().Add(p.opts.lease)
	return nil
}

// Fail removes the member at once because its connection broke; reason says
// how (it becomes Err, as a codes.Unavailable status). Failing a membership
// that has ended does nothing.
func (l *Lease) Fail(reason string) {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remove(l.rec, status.Errorf(codes.Unavailable, "member %q of group %q failed: %s", l.rec.m.ID, l.rec.g.name, reason)) {
		l.rec.g.stats.Failures++
		p.opts.log.WithFields(logrus.Fields{"group": l.rec.g.name, "member": l.rec.m.ID, "incarnation": l.rec.m.Incarnation, "reason": reason}).Info("member failed")
	}
}

// HeartbeatInterval returns how often the member must call Renew.
func (l *Lease) HeartbeatInterval() time.Duration { return l.p.opts.heartbeat }

// LeaseTime returns how long the member stays without a Renew.
func (l *Lease) LeaseTime() time.Duration { return l.p.opts.lease }
