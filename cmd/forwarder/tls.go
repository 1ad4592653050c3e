package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"slices"

	"google.golang.org/grpc/credentials"
)

// tlsFiles are the forwarder's certificate and the CA of the TLS settings,
// read once, at start. The same certificate serves the gRPC listener and,
// with TETHER_TLS_MEMBERS, is the client certificate of the dials to
// members.
type tlsFiles struct {
	cert tls.Certificate
	ca   *x509.CertPool
}

// readTLS reads the TLS files of cfg. With cfg.TLSMembers it also checks
// that the certificate may authenticate a client, which the dials to
// members need.
func readTLS(cfg Config) (*tlsFiles, error) {
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
	if bool(cfg.TLSMembers) && !clientAuth(cert.Leaf) {
		return nil, &settingError{Key: "TETHER_TLS_CERT_FILE", Value: string(cfg.TLSCertFile),
			Err: errors.New("with TETHER_TLS_MEMBERS=true the certificate is also the client certificate of the dials to members, but its extended key usage does not allow client authentication")}
	}
	caPEM, err := os.ReadFile(string(cfg.TLSCaFile))
	if err != nil {
		return nil, &settingError{Key: "TETHER_TLS_CA_FILE", Value: string(cfg.TLSCaFile), Err: unwrapPath(err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, &settingError{Key: "TETHER_TLS_CA_FILE", Value: string(cfg.TLSCaFile), Err: errors.New("no PEM certificate in the file")}
	}
	return &tlsFiles{cert: cert, ca: pool}, nil
}

// clientAuth reports whether crypto/x509 accepts leaf as a client
// certificate: no extended key usage at all, any, or client authentication.
func clientAuth(leaf *x509.Certificate) bool {
	if leaf == nil || (len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0) {
		return true
	}
	return slices.ContainsFunc(leaf.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	})
}

// server returns the gRPC listener's mTLS credentials: the forwarder's
// certificate, and client certificates required and verified against the
// CA.
func (f *tlsFiles) server() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{f.cert},
		ClientCAs:    f.ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
}

// client returns the credentials of the dials to members: the forwarder's
// certificate as the client certificate, and the member's certificate
// verified against the CA (and against the host of its URL).
func (f *tlsFiles) client() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{f.cert},
		RootCAs:      f.ca,
		MinVersion:   tls.VersionTLS13,
	})
}

// unwrapPath drops the path from a *PathError: the setting's value says it.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
