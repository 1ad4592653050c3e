package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tether-mesh/tether/pkg/view"
	"github.com/tether-mesh/tether/pkg/view/embedded"
	"github.com/tether-mesh/tether/pkg/view/etcd"
)

// views is the forwarder's view provider.
type views struct {
	provider view.Provider
	// embedded is set for the embedded provider, whose membership service
	// the forwarder serves.
	embedded *embedded.Provider
	etcd     *etcd.Provider
	client   *clientv3.Client
	timeout  time.Duration
}

// openViews opens the configured provider. For etcd it checks, within the
// dial timeout, that the cluster answers a linearizable read (so a quorum
// is up) and fails with an error naming TETHER_ETCD_ENDPOINTS otherwise.
func openViews(ctx context.Context, cfg Config, log *logrus.Entry) (*views, error) {
	timeout := time.Duration(cfg.DialTimeout)
	if cfg.ViewProvider == Embedded {
		p := embedded.New(embedded.WithLogger(log))
		return &views{provider: p, embedded: p, timeout: timeout}, nil
	}
	tlsConfig, err := cfg.etcdTLS().Config(cfg.EtcdEndpoints)
	if err != nil {
		return nil, etcdTLSError(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.EtcdEndpoints,
		DialTimeout: timeout,
		TLS:         tlsConfig,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, &settingError{Key: "TETHER_ETCD_ENDPOINTS", Value: cfg.EtcdEndpoints.String(), Err: err}
	}
	v := &views{client: cli, timeout: timeout}
	if err := v.check(ctx); err != nil {
		_ = cli.Close()
		return nil, &settingError{Key: "TETHER_ETCD_ENDPOINTS", Value: cfg.EtcdEndpoints.String(), Err: err}
	}
	v.etcd = etcd.New(cli, etcd.WithLogger(log))
	v.provider = v.etcd
	return v, nil
}

// etcdTLSError names the setting of a TLS file, or the endpoints, that
// etcd.TLSFiles.Config refused.
func etcdTLSError(err error) error {
	var fe *etcd.TLSFileError
	if errors.As(err, &fe) {
		key := map[string]string{"CA": "TETHER_ETCD_CA_FILE", "Cert": "TETHER_ETCD_CERT_FILE", "Key": "TETHER_ETCD_KEY_FILE"}[fe.Which]
		return &settingError{Key: key, Value: fe.Path, Err: fe.Err}
	}
	return &settingError{Key: "TETHER_ETCD_ENDPOINTS", Err: err}
}

// check reports whether the provider works: the embedded provider until it
// is closed, etcd when a linearizable read succeeds within the dial timeout.
func (v *views) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	if v.embedded != nil {
		_, err := v.embedded.Stats(ctx, "readyz")
		return err
	}
	if _, err := v.client.Get(ctx, etcd.DefaultPrefix, clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd does not answer within %v: %w", v.timeout, err)
	}
	return nil
}

// close ends every membership and watch of the provider (members joined
// through the membership service see their session end) and closes the
// etcd client.
func (v *views) close() {
	if v.embedded != nil {
		_ = v.embedded.Close()
	}
	if v.etcd != nil {
		_ = v.etcd.Close()
	}
	if v.client != nil {
		_ = v.client.Close()
	}
}
