package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// documented are the settings deployments/env_test.go checks manifests
// against (documentedEnv["tether-forwarder"]), with their flags: keep the
// three in step.
var documented = map[string]string{
	"TETHER_NAME":             "--name",
	"TETHER_LISTEN_URL":       "--listen-url",
	"TETHER_SOCKET_MODE":      "--socket-mode",
	"TETHER_VIEW_PROVIDER":    "--view-provider",
	"TETHER_ETCD_ENDPOINTS":   "--etcd-endpoints",
	"TETHER_ETCD_CA_FILE":     "--etcd-ca-file",
	"TETHER_ETCD_CERT_FILE":   "--etcd-cert-file",
	"TETHER_ETCD_KEY_FILE":    "--etcd-key-file",
	"TETHER_DIAL_TIMEOUT":     "--dial-timeout",
	"TETHER_SELECTION_POLICY": "--selection-policy",
	"TETHER_LOG_LEVEL":        "--log-level",
	"TETHER_LOG_FORMAT":       "--log-format",
	"TETHER_METRICS_ADDR":     "--metrics-addr",
	"TETHER_PPROF":            "--pprof",
	"TETHER_TLS_CERT_FILE":    "--tls-cert-file",
	"TETHER_TLS_KEY_FILE":     "--tls-key-file",
	"TETHER_TLS_CA_FILE":      "--tls-ca-file",
	"TETHER_TLS_MEMBERS":      "--tls-members",
}

func TestSettingsAreTheDocumentedOnes(t *testing.T) {
	t.Parallel()
	var cfg Config
	var got []string
	for _, s := range settings(&cfg) {
		got = append(got, s.env)
		if documented[s.env] != "--"+s.flag {
			t.Errorf("%s has flag --%s, want %s", s.env, s.flag, documented[s.env])
		}
		if s.desc == "" {
			t.Errorf("%s has no description", s.env)
		}
	}
	if len(got) != len(documented) {
		t.Errorf("settings %v, want the %d documented ones", got, len(documented))
	}
	var help bytes.Buffer
	if err := printUsage(&help); err != nil {
		t.Fatal(err)
	}
	for env, flag := range documented {
		if !slices.ContainsFunc(strings.Split(help.String(), "\n"), func(line string) bool {
			return strings.HasPrefix(line, env+" ") && strings.Contains(line, " "+flag+" ")
		}) {
			t.Errorf("--help has no line for %s %s:\n%s", env, flag, help.String())
		}
	}
}

// TestValues pins what each setting's type accepts, and that what it
// refuses gets a message saying what it wants.
func TestValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value   decoder
		good    []string
		bad     []string
		want    string // String() of the last good value
		message string // in every refusal
	}{
		{new(URL), []string{"tcp://127.0.0.1:0", "unix:///var/lib/tether/f.sock"}, []string{"", "unix://relative.sock", "http://x:1", "tcp://host", "/path"}, "unix:///var/lib/tether/f.sock", "want unix:///absolute/path or tcp://host:port"},
		{new(Mode), []string{"600", "0660"}, []string{"", "rw", "0999", "01777", "0"}, "0660", "want octal"},
		{new(Provider), []string{"etcd", "embedded"}, []string{"", "consul", "Embedded"}, "embedded", "want embedded or etcd"},
		{new(Endpoints), []string{"http://a:2379", "http://a:2379, https://b:2379"}, []string{"a:2379", "http://a", "ftp://a:1"}, "http://a:2379,https://b:2379", "want http://host:port"},
		{new(Duration), []string{"1s", "250ms"}, []string{"", "1", "soon", "-1s", "0s"}, "250ms", "want a positive duration"},
		{new(Policy), []string{"primary", "least-connections", "rendezvous"}, []string{"", "random", "Primary"}, "rendezvous", "want primary, rendezvous or least-connections"},
		{new(Level), []string{"debug", "warning", "info"}, []string{"", "loud"}, "info", "want panic, fatal"},
		{new(Format), []string{"json", "text"}, []string{"", "xml"}, "text", "want text or json"},
		{new(Address), []string{":9090", "127.0.0.1:0", "[::1]:80"}, []string{"", "9090", "host:http", "h:70000"}, "[::1]:80", "want host:port"},
		{new(Bool), []string{"true", "1", "false"}, []string{"", "maybe"}, "false", "want true or false"},
	} {
		for _, s := range tc.good {
			if err := tc.value.Decode(s); err != nil {
				t.Errorf("%T refuses %q: %v", tc.value, s, err)
			}
		}
		if got := tc.value.String(); got != tc.want {
			t.Errorf("%T reads back %q, want %q", tc.value, got, tc.want)
		}
		for _, s := range tc.bad {
			err := tc.value.Decode(s)
			if err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("%T accepts or misreports %q: %v", tc.value, s, err)
			}
			if got := tc.value.String(); got != tc.want {
				t.Errorf("%T changed to %q on a refused value %q", tc.value, got, s)
			}
		}
	}
}

func TestUnknownSettings(t *testing.T) {
	t.Parallel()
	got := unknownSettings([]string{"TETHER_LOGLEVEL=debug", "TETHER_LOG_LEVEL=info", "PATH=/bin", "TETHERX=1", "TETHER_A=1"})
	if want := []string{"TETHER_A", "TETHER_LOGLEVEL"}; !slices.Equal(got, want) {
		t.Fatalf("unknown settings %v, want %v", got, want)
	}
}

func TestWantsHelp(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]bool{
		"--help": true, "-h": true, "--listen-url=x -help": true, "--name -- --help": false, "--name=x": false, "": false,
	} {
		if got := wantsHelp(strings.Fields(args)); got != want {
			t.Errorf("wantsHelp(%q) = %v", args, got)
		}
	}
}
