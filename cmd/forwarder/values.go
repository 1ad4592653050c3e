package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/sockurl"
	"github.com/tether-mesh/tether/pkg/view/viewrefresh"
)

// The types of the settings. Each reads its text with Decode, which
// envconfig calls for the environment variable and the flag calls for
// itself, so that both accept and refuse the same values with the same
// message; the type's name is the TYPE column of --help.

// Text is a free-form setting.
type Text string

// Decode implements envconfig.Decoder.
func (t *Text) Decode(s string) error {
	*t = Text(strings.TrimSpace(s))
	return nil
}

func (t Text) String() string { return string(t) }

// File is the path of a file the forwarder reads at start.
type File string

// Decode implements envconfig.Decoder.
func (f *File) Decode(s string) error {
	*f = File(strings.TrimSpace(s))
	return nil
}

func (f File) String() string { return string(f) }

// URL is a listen URL: unix:///absolute/path or tcp://host:port.
type URL string

// Decode implements envconfig.Decoder.
func (u *URL) Decode(s string) error {
	if _, _, err := sockurl.Parse(s); err != nil {
		return errors.New("want unix:///absolute/path or tcp://host:port")
	}
	*u = URL(s)
	return nil
}

func (u URL) String() string { return string(u) }

// Mode is a unix socket's permission bits, in octal.
type Mode os.FileMode

// Decode implements envconfig.Decoder.
func (m *Mode) Decode(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 8, 32)
	if err != nil || n > 0o777 || n == 0 {
		return errors.New("want octal permission bits such as 0600 or 0660")
	}
	*m = Mode(n)
	return nil
}

func (m Mode) String() string { return fmt.Sprintf("%#o", uint32(m)) }

// Provider is the view provider: embedded or etcd.
type Provider string

// The view providers.
const (
	Embedded Provider = "embedded"
	Etcd     Provider = "etcd"
)

// Decode implements envconfig.Decoder.
func (p *Provider) Decode(s string) error {
	switch v := Provider(strings.TrimSpace(s)); v {
	case Embedded, Etcd:
		*p = v
		return nil
	}
	return errors.New("want embedded or etcd")
}

func (p Provider) String() string { return string(p) }

// Endpoints are etcd client URLs, comma-separated.
type Endpoints []string

// Decode implements envconfig.Decoder.
func (e *Endpoints) Decode(s string) error {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		u, err := url.Parse(item)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
			return fmt.Errorf("%q: want http://host:port or https://host:port, comma-separated", item)
		}
		out = append(out, item)
	}
	*e = out
	return nil
}

func (e Endpoints) String() string { return strings.Join(e, ",") }

// Duration is a positive duration such as 500ms or 2s.
type Duration time.Duration

// Decode implements envconfig.Decoder.
func (d *Duration) Decode(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || v <= 0 {
		return errors.New("want a positive duration such as 500ms or 2s")
	}
	*d = Duration(v)
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// Policy is a selection policy: primary, rendezvous or least-connections.
type Policy viewrefresh.Policy

// Decode implements envconfig.Decoder.
func (p *Policy) Decode(s string) error {
	for _, v := range []viewrefresh.Policy{viewrefresh.Primary, viewrefresh.Rendezvous, viewrefresh.LeastConnections} {
		if v.String() == strings.TrimSpace(s) {
			*p = Policy(v)
			return nil
		}
	}
	return errors.New("want primary, rendezvous or least-connections")
}

func (p Policy) String() string { return viewrefresh.Policy(p).String() }

// Level is a logrus level.
type Level logrus.Level

// Decode implements envconfig.Decoder.
func (l *Level) Decode(s string) error {
	v, err := logrus.ParseLevel(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want panic, fatal, error, warn, info, debug or trace")
	}
	*l = Level(v)
	return nil
}

func (l Level) String() string { return logrus.Level(l).String() }

// Format is a log format: text or json.
type Format string

// Decode implements envconfig.Decoder.
func (f *Format) Decode(s string) error {
	switch v := Format(strings.TrimSpace(s)); v {
	case "text", "json":
		*f = v
		return nil
	}
	return errors.New("want text or json")
}

func (f Format) String() string { return string(f) }

// Address is a TCP listen address, host:port (port 0 picks a free port).
type Address string

// Decode implements envconfig.Decoder.
func (a *Address) Decode(s string) error {
	s = strings.TrimSpace(s)
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port or :port")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errors.New("want host:port with a port of 0-65535")
	}
	*a = Address(s)
	return nil
}

func (a Address) String() string { return string(a) }

// Bool is true or false.
type Bool bool

// Decode implements envconfig.Decoder.
func (b *Bool) Decode(s string) error {
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want true or false")
	}
	*b = Bool(v)
	return nil
}

func (b Bool) String() string { return strconv.FormatBool(bool(b)) }
