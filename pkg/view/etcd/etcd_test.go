package etcd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tether-mesh/tether/internal/etcdtest"
	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/conformance"
	"github.com/tether-mesh/tether/pkg/view/etcd"
	"github.com/tether-mesh/tether/pkg/view/internal/childproc"
	"github.com/tether-mesh/tether/pkg/view/internal/viewtest"
)

func TestMain(m *testing.M) {
	childproc.Main(map[string]childproc.Role{roleMember: member})
	logrus.SetLevel(logrus.WarnLevel)
	goleak.VerifyTestMain(m)
}

// startEtcd starts a one-node etcd for tb and returns its client URL.
func startEtcd(tb testing.TB) string {
	tb.Helper()
	return etcdtest.Start(tb).URL
}

func newClient(tb testing.TB, endpoint string) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func newProvider(tb testing.TB, endpoint string, opts ...etcd.Option) *etcd.Provider {
	tb.Helper()
	p := etcd.New(newClient(tb, endpoint), opts...)
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

const roleMember = "etcd-member"

type memberArg struct {
	Endpoint string        `json:"endpoint"`
	Prefix   string        `json:"prefix"`
	TTL      time.Duration `json:"ttl"`
	Group    string        `json:"group"`
	Member   view.Member   `json:"member"`
}

func member(ctx context.Context, arg string, ready func(string)) error {
	var a memberArg
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return err
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{a.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	p := etcd.New(c, etcd.WithPrefix(a.Prefix), etcd.WithTTL(a.TTL))
	defer p.Close()
	ms, err := p.Join(ctx, a.Group, a.Member)
	if err != nil {
		return err
	}
	ready(strconv.FormatUint(ms.Member().Incarnation, 10))
	select {
	case <-ctx.Done():
		return ms.Leave(context.Background())
	case <-ms.Done():
		return ms.Err()
	}
}

func spawn(tb testing.TB, endpoint, prefix, group string, m view.Member) *childproc.Child {
	tb.Helper()
	return childproc.Start(tb, roleMember, viewtest.Arg(memberArg{Endpoint: endpoint, Prefix: prefix, TTL: time.Second, Group: group, Member: m}), viewtest.StartTimeout)
}

// TestConformance runs the suite against etcd. Members of the provider
// under test have a long lease, so that the suite tells a leave from an
// expiry; hung and killed members have the shortest etcd allows, one second.
func TestConformance(t *testing.T) {
	endpoint := startEtcd(t)
	conformance.Run(t, func(t *testing.T) conformance.Backend {
		prefix := fmt.Sprintf("/%s/", conformance.Group(t))
		return conformance.Backend{
			Provider: newProvider(t, endpoint, etcd.WithPrefix(prefix), etcd.WithTTL(time.Minute)),
			Reconnect: func(t *testing.T) (view.Provider, func()) {
				c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
				if err != nil {
					t.Fatal(err)
				}
				p := etcd.New(c, etcd.WithPrefix(prefix), etcd.WithTTL(time.Minute))
				return p, func() {
					_ = p.Close()
					_ = c.Close()
				}
			},
			Hung: newProvider(t, endpoint, etcd.WithPrefix(prefix), etcd.WithTTL(time.Second), etcd.WithHeartbeatInterval(time.Hour)),
			Wait: 15 * time.Second,
			Spawn: func(t *testing.T, group string, m view.Member) func() {
				return spawn(t, endpoint, prefix, group, m).Kill
			},
		}
	})
}
