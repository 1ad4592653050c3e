package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"

	"github.com/tether-mesh/tether/pkg/view/etcd"
)

// envPrefix is the prefix of every setting's environment variable.
const envPrefix = "TETHER"

// Config is the forwarder's configuration. Every field is read from the
// environment variable TETHER_<FIELD> (envconfig, the words of the field's
// name split by underscores) and then from the flag named in its flag tag,
// which wins. Keep the set in step with deployments/env_test.go.
type Config struct {
	Name            Text      `split_words:"true" flag:"name" desc:"the forwarder's name, unique per node (default: the host name)"`
	ListenURL       URL       `split_words:"true" flag:"listen-url" default:"unix:///var/lib/tether/forwarder.sock" desc:"the gRPC listener: unix:///path or tcp://host:port"`
	SocketMode      Mode      `split_words:"true" flag:"socket-mode" default:"0600" desc:"the unix socket's permission bits, octal"`
	ViewProvider    Provider  `split_words:"true" flag:"view-provider" default:"embedded" desc:"where views come from: embedded (members join through this forwarder) or etcd"`
	EtcdEndpoints   Endpoints `split_words:"true" flag:"etcd-endpoints" desc:"etcd client URLs, comma-separated (view provider etcd); https:// with the TETHER_ETCD_*_FILE settings"`
	EtcdCaFile      File      `split_words:"true" flag:"etcd-ca-file" desc:"the CA that signs etcd's server certificates (PEM; default with https:// endpoints: the system's roots)"`
	EtcdCertFile    File      `split_words:"true" flag:"etcd-cert-file" desc:"the client certificate for etcd's client certificate authentication (PEM), with its key"`
	EtcdKeyFile     File      `split_words:"true" flag:"etcd-key-file" desc:"the client certificate's private key (PEM)"`
	DialTimeout     Duration  `split_words:"true" flag:"dial-timeout" default:"1s" desc:"bound on reaching a member, on the start-up check of etcd and on each /readyz check"`
	SelectionPolicy Policy    `split_words:"true" flag:"selection-policy" default:"rendezvous" desc:"how a member is chosen: primary, rendezvous or least-connections"`
	LogLevel        Level     `split_words:"true" flag:"log-level" default:"info" desc:"log level; SIGUSR1 raises it to debug, SIGUSR2 restores it"`
	LogFormat       Format    `split_words:"true" flag:"log-format" default:"text" desc:"log format: text or json"`
	MetricsAddr     Address   `split_words:"true" flag:"metrics-addr" default:":9090" desc:"HTTP address of /metrics, /healthz and /readyz (port 0: any free port)"`
	Pprof           Bool      `split_words:"true" flag:"pprof" default:"false" desc:"serve /debug/pprof/ on the metrics address"`
	TLSCertFile     File      `split_words:"true" flag:"tls-cert-file" desc:"the gRPC listener's certificate (PEM); with the key and CA files, clients must present a certificate the CA signed"`
	TLSKeyFile      File      `split_words:"true" flag:"tls-key-file" desc:"the certificate's private key (PEM)"`
	TLSCaFile       File      `split_words:"true" flag:"tls-ca-file" desc:"the CA that signs client certificates (PEM), and members' certificates with TETHER_TLS_MEMBERS"`
	TLSMembers      Bool      `split_words:"true" flag:"tls-members" default:"false" desc:"dial members with mTLS too (needs the three TLS files): the forwarder's certificate is the client certificate, so it must allow client authentication as well as server; members' certificates are verified against the CA"`
}

// settingError is a setting that cannot be used: its key (an environment
// variable or a flag), its value and why.
type settingError struct {
	Key   string
	Value string
	Err   error
}

func (e *settingError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %v", e.Key, e.Err)
	}
	return fmt.Sprintf("%s: %s: %v", e.Key, e.Value, e.Err)
}

func (e *settingError) Unwrap() error { return e.Err }

// errHelp is returned by loadConfig when the arguments ask for help.
var errHelp = errors.New("help requested")

// decoder is what every setting's type implements.
type decoder interface {
	Decode(string) error
	String() string
}

// setting is one field of Config with its keys.
type setting struct {
	env, flag, desc string
	value           decoder
}

// settings lists the fields of cfg with their environment variables and flags.
func settings(cfg *Config) []setting {
	v := reflect.ValueOf(cfg).Elem()
	t := v.Type()
	keys := envKeys()
	out := make([]setting, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		out = append(out, setting{env: keys[i], flag: f.Tag.Get("flag"), desc: f.Tag.Get("desc"), value: v.Field(i).Addr().Interface().(decoder)})
	}
	return out
}

// envKeys returns the environment variable of every field of Config, in
// field order, as envconfig names them.
func envKeys() []string {
	var keys []string
	_ = envconfig.Usagef(envPrefix, &Config{}, writerFunc(func(p []byte) (int, error) {
		keys = append(keys, strings.Fields(string(p))...)
		return len(p), nil
	}), "{{range .}}{{usage_key .}} {{end}}")
	return keys
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// wantsHelp reports whether args ask for help, before anything is parsed,
// so that --help works whatever the environment holds.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		switch a {
		case "-h", "--h", "-help", "--help":
			return true
		}
	}
	return false
}

// loadConfig reads the environment and then args. It returns errHelp when
// args ask for help, and a *settingError naming the setting when one cannot
// be used.
func loadConfig(args []string) (Config, error) {
	var cfg Config
	if wantsHelp(args) {
		return cfg, errHelp
	}
	if err := envconfig.Process(envPrefix, &cfg); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return cfg, &settingError{Key: pe.KeyName, Value: pe.Value, Err: pe.Err}
		}
		return cfg, err
	}
	fs := flag.NewFlagSet(binaryName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var bad *settingError
	for _, s := range settings(&cfg) {
		set := func(text string) error {
			if err := s.value.Decode(text); err != nil {
				bad = &settingError{Key: "--" + s.flag, Value: text, Err: err}
				return err
			}
			return nil
		}
		if _, ok := s.value.(*Bool); ok {
			fs.BoolFunc(s.flag, s.desc, set)
		} else {
			fs.Func(s.flag, s.desc, set)
		}
	}
	if err := fs.Parse(args); err != nil {
		if bad != nil {
			return cfg, bad
		}
		return cfg, fmt.Errorf("%w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return cfg, &settingError{Key: "TETHER_NAME", Err: errors.New("not set, and the host name is unknown")}
		}
		cfg.Name = Text(host)
	}
	return cfg, cfg.check()
}

// check validates settings that depend on each other.
func (cfg *Config) check() error {
	if cfg.ViewProvider == Etcd && len(cfg.EtcdEndpoints) == 0 {
		return &settingError{Key: "TETHER_ETCD_ENDPOINTS", Err: errors.New("required with TETHER_VIEW_PROVIDER=etcd")}
	}
	if cfg.etcdTLS().Set() && cfg.ViewProvider != Etcd {
		return &settingError{Key: "TETHER_VIEW_PROVIDER", Value: cfg.ViewProvider.String(), Err: errors.New("the TETHER_ETCD_*_FILE settings are for TLS to etcd: set TETHER_VIEW_PROVIDER=etcd, or unset them")}
	}
	tlsFiles := []struct {
		key  string
		file File
	}{{"TETHER_TLS_CERT_FILE", cfg.TLSCertFile}, {"TETHER_TLS_KEY_FILE", cfg.TLSKeyFile}, {"TETHER_TLS_CA_FILE", cfg.TLSCaFile}}
	set := 0
	for _, f := range tlsFiles {
		if f.file != "" {
			set++
		}
	}
	if set > 0 && set < len(tlsFiles) {
		for _, f := range tlsFiles {
			if f.file == "" {
				return &settingError{Key: f.key, Err: errors.New("mTLS needs the certificate, key and CA files: set all three or none")}
			}
		}
	}
	if bool(cfg.TLSMembers) && set == 0 {
		return &settingError{Key: "TETHER_TLS_MEMBERS", Value: cfg.TLSMembers.String(), Err: errors.New("mTLS to members needs TETHER_TLS_CERT_FILE, TETHER_TLS_KEY_FILE and TETHER_TLS_CA_FILE")}
	}
	return nil
}

// etcdTLS returns the files of the TLS connection to etcd.
func (cfg *Config) etcdTLS() etcd.TLSFiles {
	return etcd.TLSFiles{CA: string(cfg.EtcdCaFile), Cert: string(cfg.EtcdCertFile), Key: string(cfg.EtcdKeyFile)}
}

// TLS reports whether the gRPC listener uses mTLS.
func (cfg *Config) TLS() bool { return cfg.TLSCertFile != "" }

// unknownSettings returns the TETHER_ environment variables that are not
// settings (a misspelt name would otherwise be ignored without a word).
func unknownSettings(environ []string) []string {
	known := envKeys()
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") && !slices.Contains(known, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	return unknown
}

// usageTable is envconfig's usage table with the flag of each variable.
const usageTable = `{{range .}}{{usage_key .}}	--{{.Tags.Get "flag"}}	{{usage_type .}}	{{usage_default .}}	{{usage_description .}}
{{end}}`

// printUsage writes --help: what the binary is and the table of settings.
func printUsage(w io.Writer) error {
	fmt.Fprintf(w, `Usage: %[1]s [flags]

%[1]s is the tether node daemon: it serves NetworkService,
MonitorConnection, the membership service (embedded views) and gRPC health
on one gRPC listener, and Prometheus metrics, /healthz and /readyz over HTTP.

Every setting is an environment variable or the flag beside it; a flag wins.
Signals: SIGUSR1 raises the log level to debug, SIGUSR2 restores it,
SIGTERM or SIGINT stop gracefully (within 10s).

`, binaryName)
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tFLAG\tTYPE\tDEFAULT\tDESCRIPTION")
	if err := envconfig.Usagef(envPrefix, &Config{}, tw, usageTable); err != nil {
		return err
	}
	return tw.Flush()
}
