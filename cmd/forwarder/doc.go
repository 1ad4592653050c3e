// Command tether-forwarder is the tether node daemon: it runs on every node
// and brokers connections from the node's clients to the members of process
// groups, keeping each on a live member. README.md in this directory is the
// operator's page: settings, endpoints, signals, metrics, exit codes.
//
// One gRPC server on TETHER_LISTEN_URL serves the forwarder chain
// (NetworkService, MonitorConnection; pkg/forwarder), the membership service
// when views are embedded, gRPC health and reflection; with the TETHER_TLS_
// files it requires mTLS, and with TETHER_TLS_MEMBERS=true the forwarder
// dials members with mTLS too; the TETHER_ETCD_*_FILE settings make its
// connection to etcd TLS. HTTP on TETHER_METRICS_ADDR serves /metrics,
// /healthz, /readyz and, with TETHER_PPROF=true, /debug/pprof/.
//
// Settings are TETHER_ environment variables read with envconfig, each
// overridden by a flag (tether-forwarder --help prints the table). A setting
// that cannot be used stops the forwarder before it serves, with one line
// on stderr that names it:
//
//	tether-forwarder: TETHER_LISTEN_URL: unix:///x.sock: another process serves there
//
// SIGUSR1 and SIGUSR2 raise the log level to debug (the chain's
// element-by-element log included) and restore it; SIGTERM and SIGINT stop
// it gracefully within 10 s.
//
// The files hold one job each: config.go and values.go read the settings,
// run.go is the process (exit codes, signals), daemon.go starts and stops
// the servers, views.go opens the view provider, heals.go observes heals,
// interceptors.go counts calls in flight and the groups members join,
// http.go serves the metrics address, tls.go loads the mTLS files.
package main
