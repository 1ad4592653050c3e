package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSFiles are the PEM files of a TLS connection to etcd: the CA that signs
// the etcd servers' certificates (empty: the system's roots), and the
// client certificate and key for etcd's client certificate authentication
// (both or neither).
type TLSFiles struct {
	CA, Cert, Key string
}

// Set reports whether any file is given.
func (f TLSFiles) Set() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// TLSFileError is a TLS file that cannot be used. Which is "CA", "Cert" or
// "Key", the field of TLSFiles; Path is empty when the file is missing.
type TLSFileError struct {
	Which, Path string
	Err         error
}

func (e *TLSFileError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("etcd TLS %s file: %v", strings.ToLower(e.Which), e.Err)
	}
	return fmt.Sprintf("etcd TLS %s file %s: %v", strings.ToLower(e.Which), e.Path, e.Err)
}

func (e *TLSFileError) Unwrap() error { return e.Err }

// ErrPlainEndpoint is returned by Config for an endpoint that etcd's client
// would reach without TLS although TLS files are given: it drops TLS for
// http:// and unix:// endpoints.
var ErrPlainEndpoint = errors.New("TLS files are set, but the endpoint is not https:// or unixs://, which etcd's client would reach without TLS")

// Config returns the TLS configuration of a client of the endpoints
// (clientv3.Config.TLS), or nil when no file is given. With files, every
// endpoint must be https:// or unixs://.
func (f TLSFiles) Config(endpoints []string) (*tls.Config, error) {
	if !f.Set() {
		return nil, nil
	}
	for _, ep := range endpoints {
		if !strings.HasPrefix(ep, "https://") && !strings.HasPrefix(ep, "unixs://") {
			return nil, fmt.Errorf("%s: %w", ep, ErrPlainEndpoint)
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12} // etcd serves TLS 1.2 by default
	switch {
	case f.Cert != "" && f.Key == "":
		return nil, &TLSFileError{Which: "Key", Err: errors.New("not set: a client certificate needs its key")}
	case f.Key != "" && f.Cert == "":
		return nil, &TLSFileError{Which: "Cert", Err: errors.New("not set: a key needs its client certificate")}
	case f.Cert != "":
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, &TLSFileError{Which: "Cert", Path: f.Cert, Err: fmt.Errorf("with key %s: %w", f.Key, err)}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, &TLSFileError{Which: "CA", Path: f.CA, Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &TLSFileError{Which: "CA", Path: f.CA, Err: errors.New("no PEM certificate in the file")}
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
