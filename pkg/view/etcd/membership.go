package etcd

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tether-mesh/tether/pkg/view"
)

// membership is a member's key in etcd, kept alive by run.
type membership struct {
	p     *Provider
	group string
	m     view.Member
	key   string
	lease clientv3.LeaseID
	log   *logrus.Entry

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	leaving bool
	err     error
	done    chan struct{}
}

func (ms *membership) Group() string         { return ms.group }
func (ms *membership) Member() view.Member   { return ms.m }
func (ms *membership) Done() <-chan struct{} { return ms.done }

func (ms *membership) Err() error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.err
}

// end records how the membership ended, once; it reports whether this call
// ended it.
func (ms *membership) end(err error) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.err != nil {
		return false
	}
	ms.err = err
	close(ms.done)
	ms.cancel()
	return true
}

// run renews the lease every heartbeat interval and watches the member's
// key: its deletion by anyone but Leave means the lease expired.
func (ms *membership) run() {
	p := ms.p
	defer p.forget(ms)
	defer func() {
		// However run stopped, the membership has ended.
		ms.lost(status.Errorf(codes.Unavailable, "member %q of group %q was lost: its etcd watch ended", ms.m.ID, ms.group))
	}()
	watchKey := func() clientv3.WatchChan {
		return p.c.Watch(clientv3.WithRequireLeader(ms.ctx), ms.key, clientv3.WithRev(int64(ms.m.Incarnation)+1))
	}
	keyWatch := watchKey()
	tick := time.NewTicker(p.opts.heartbeat)
	defer tick.Stop()
	lastRenewal := time.Now()
	for {
		select {
		case <-ms.ctx.Done():
			return
		case wr, ok := <-keyWatch:
			if !ok {
				return
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					ms.expire("its key was deleted: its lease expired")
					return
				}
			}
			if err := wr.Err(); err != nil {
				// A broken watch of the key (no leader, say): follow it
				// again at the next tick from the membership's start,
				// which replays a deletion it missed.
				ms.log.WithError(err).Debug("the watch of the member's key broke")
				keyWatch = nil
			}
		case <-tick.C:
			if keyWatch == nil {
				keyWatch = watchKey()
			}
			ctx, cancel := context.WithTimeout(ms.ctx, p.opts.timeout)
			_, err := p.c.KeepAliveOnce(ctx, ms.lease)
			cancel()
			switch {
			case err == nil:
				lastRenewal = time.Now()
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				ms.expire("etcd no longer has its lease")
				return
			case ms.ctx.Err() != nil:
				return
			case time.Since(lastRenewal) > p.opts.ttl:
				ms.expire("its lease could not be renewed for longer than its TTL: " + err.Error())
				return
			default:
				ms.log.WithError(err).Warn("could not renew the member's lease in etcd")
			}
		}
	}
}

func (ms *membership) expire(reason string) {
	if ms.lost(status.Errorf(codes.DeadlineExceeded, "member %q of group %q was lost: %s", ms.m.ID, ms.group, reason)) {
		ms.p.count(ms.group, func(st *view.Stats) { st.Expiries++ })
		ms.log.WithField("reason", reason).Info("member expired")
	}
}

// lost ends the membership with err unless it is leaving or has ended.
func (ms *membership) lost(err error) bool {
	ms.mu.Lock()
	leaving := ms.leaving
	ms.mu.Unlock()
	return !leaving && ms.end(err)
}

// Leave implements view.Membership: it deletes the member's key, if it is
// still this incarnation's, and revokes the lease.
func (ms *membership) Leave(ctx context.Context) error {
	if !ms.startLeaving() {
		select { // a Leave in progress ends it
		case <-ms.done:
		case <-ctx.Done():
		}
		return nil
	}
	err := ms.remove(ctx)
	if ms.end(view.ErrLeft) {
		ms.p.count(ms.group, func(st *view.Stats) { st.Leaves++ })
		ms.log.Info("member left")
	}
	return err
}

// shutdown removes the member because the provider closes.
func (ms *membership) shutdown(ctx context.Context, reason error) error {
	if !ms.startLeaving() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ms.p.opts.timeout)
	defer cancel()
	err := ms.remove(ctx)
	ms.end(reason)
	return err
}

// startLeaving marks the membership as leaving; it reports false when it
// has ended or is leaving already.
func (ms *membership) startLeaving() bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.err != nil || ms.leaving {
		return false
	}
	ms.leaving = true
	return true
}

func (ms *membership) remove(ctx context.Context) error {
	p := ms.p
	_, err := p.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ms.key), "=", int64(ms.m.Incarnation))).
		Then(clientv3.OpDelete(ms.key), clientv3.OpPut(p.keys.group(ms.group), "")).
		Commit()
	if err != nil {
		return etcdError("leave group "+ms.group+" in etcd", err)
	}
	if _, err := p.c.Revoke(ctx, ms.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return etcdError("revoke the lease of a member in etcd", err)
	}
	return nil
}
