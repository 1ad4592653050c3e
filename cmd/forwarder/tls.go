package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"

	"google.golang.org/grpc/credentials"
)

// serverTLS returns the gRPC listener's mTLS credentials: the forwarder's
// certificate, and client certificates required and verified against the
// CA. The files are read once, at start.
func serverTLS(cfg Config) (credentials.TransportCredentials, error) {
	certPEM, err := os.ReadFile(string(cfg.TLSCertFile))
	if err != nil {
		return nil, &settingError{Key: "TETHER_TLS_CERT_FILE", Value: string(cfg.TLSCertFile), Err: unwrapPath(err)}
	}
	keyPEM, err := os.ReadFile(string(cfg.TLSKeyFile))
	if err != nil {
		return nil, &settingError{Key: "TETHER_TLS_KEY_FILE", Value: string(cfg.TLSKeyFile), Err: unwrapPath(err)}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &settingError{Key: "TETHER_TLS_CERT_FILE and TETHER_TLS_KEY_FILE", Err: err}
	}
	caPEM, err := os.ReadFile(string(cfg.TLSCaFile))
	if err != nil {
		return nil, &settingError{Key: "TETHER_TLS_CA_FILE", Value: string(cfg.TLSCaFile), Err: unwrapPath(err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, &settingError{Key: "TETHER_TLS_CA_FILE", Value: string(cfg.TLSCaFile), Err: errors.New("no PEM certificate in the file")}
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}), nil
}

// unwrapPath drops the path from a *PathError: the setting's value says it.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
