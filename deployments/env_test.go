package deployments

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// setting checks the value of one documented setting.
type setting func(v string) error

func oneOf(values ...string) setting {
	return func(v string) error {
		if !slices.Contains(values, v) {
			return fmt.Errorf("want one of %s", strings.Join(values, ", "))
		}
		return nil
	}
}

func listOf(values ...string) setting {
	return func(v string) error {
		for item := range strings.SplitSeq(v, ",") {
			if !slices.Contains(values, strings.TrimSpace(item)) {
				return fmt.Errorf("%q: want a comma-separated list of %s", item, strings.Join(values, ", "))
			}
		}
		return nil
	}
}

func nonEmpty(v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("empty")
	}
	return nil
}

func duration(v string) error {
	d, err := time.ParseDuration(v)
	if err == nil && d <= 0 {
		return fmt.Errorf("want a positive duration")
	}
	return err
}

func boolean(v string) error {
	_, err := strconv.ParseBool(v)
	return err
}

func absPath(v string) error {
	if !path.IsAbs(v) {
		return fmt.Errorf("want an absolute path")
	}
	return nil
}

func octalMode(v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n == 0 || n > 0o777 {
		return fmt.Errorf("want an octal permission such as 0660 (not 0: nobody could connect)")
	}
	return nil
}

func hostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q: want 1-65535", port)
	}
	return nil
}

// gRPCURL is a listen or dial URL: unix:///absolute/path or tcp://host:port.
func gRPCURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "unix":
		return absPath(u.Path)
	case "tcp":
		return hostPort(u.Host)
	}
	return fmt.Errorf("want unix:///path or tcp://host:port")
}

func etcdEndpoints(v string) error {
	for e := range strings.SplitSeq(v, ",") {
		u, err := url.Parse(strings.TrimSpace(e))
		if err != nil {
			return err
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("%q: want http:// or https:// URLs", e)
		}
		if err := hostPort(u.Host); err != nil {
			return fmt.Errorf("%q: %w", e, err)
		}
	}
	return nil
}

var logLevel = oneOf("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")

// documentedEnv is, for each binary of the image, the environment it reads
// (its documented TETHER_ settings) and how to check a value.
var documentedEnv = map[string]map[string]setting{
	"tether-forwarder": {
		"TETHER_NAME":             nonEmpty,
		"TETHER_LISTEN_URL":       gRPCURL,
		"TETHER_SOCKET_MODE":      octalMode,
		"TETHER_VIEW_PROVIDER":    oneOf("embedded", "etcd"),
		"TETHER_ETCD_ENDPOINTS":   etcdEndpoints,
		"TETHER_ETCD_CA_FILE":     absPath,
		"TETHER_ETCD_CERT_FILE":   absPath,
		"TETHER_ETCD_KEY_FILE":    absPath,
		"TETHER_DIAL_TIMEOUT":     duration,
		"TETHER_SELECTION_POLICY": oneOf("primary", "rendezvous", "least-connections"),
		"TETHER_LOG_LEVEL":        logLevel,
		"TETHER_LOG_FORMAT":       oneOf("text", "json"),
		"TETHER_METRICS_ADDR":     hostPort,
		"TETHER_PPROF":            boolean,
		"TETHER_TLS_CERT_FILE":    absPath,
		"TETHER_TLS_KEY_FILE":     absPath,
		"TETHER_TLS_CA_FILE":      absPath,
		"TETHER_TLS_MEMBERS":      boolean,
	},
	"tether-echo-member": {
		"TETHER_GROUP":                 nonEmpty,
		"TETHER_MEMBER_ID":             nonEmpty,
		"TETHER_VIEW_PROVIDER":         oneOf("embedded", "etcd"),
		"TETHER_FORWARDER_URL":         gRPCURL,
		"TETHER_ETCD_ENDPOINTS":        etcdEndpoints,
		"TETHER_ETCD_LEASE_TTL":        duration,
		"TETHER_ETCD_CA_FILE":          absPath,
		"TETHER_ETCD_CERT_FILE":        absPath,
		"TETHER_ETCD_KEY_FILE":         absPath,
		"TETHER_LISTEN_URL":            gRPCURL,
		"TETHER_ADVERTISE_URL":         gRPCURL,
		"TETHER_CHANNEL_PROVIDERS":     listOf("shm", "tcp"),
		"TETHER_TCP_CHANNEL_ADDR":      hostPort,
		"TETHER_TCP_CHANNEL_ADVERTISE": hostPort,
		"TETHER_SHM_DIR":               absPath,
		"TETHER_LOG_LEVEL":             logLevel,
		"TETHER_METRICS_ADDR":          hostPort,
		"TETHER_TLS_CERT_FILE":         absPath,
		"TETHER_TLS_KEY_FILE":          absPath,
		"TETHER_TLS_CA_FILE":           absPath,
	},
	socketDirBinary: {},
}

// auxiliaryEnv are variables a manifest defines only to build others from
// them with $(NAME), e.g. TETHER_LISTEN_URL=tcp://$(POD_IP):7100.
var auxiliaryEnv = map[string]bool{"POD_IP": true}

// downwardAPI are the fields an env var may take from the pod.
var downwardAPI = regexp.MustCompile(`^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$`)

// envVar is one variable of a container's environment, in the order the
// kubelet defines them (envFrom first, then env).
type envVar struct {
	name  string
	value string // expanded; for a downward API field, a stand-in
	set   bool   // a literal or expanded value, not a reference resolved at run time
	from  string // where it is defined, for messages
}

type environment []envVar

// value returns the last definition of name, as the kubelet does.
func (e environment) value(name string) (string, bool) {
	for i := len(e) - 1; i >= 0; i-- {
		if e[i].name == name {
			return e[i].value, e[i].set
		}
	}
	return "", false
}

func (e environment) has(name string) bool {
	return slices.ContainsFunc(e, func(v envVar) bool { return v.name == name })
}

// standIns are the values the env check expands downward API fields to, so
// that a composed value like tcp://$(POD_IP):7100 can be parsed.
var standIns = map[string]string{"status.podIP": "10.0.0.1", "status.hostIP": "10.0.0.2", "spec.nodeName": "node-0", "metadata.name": "pod-0", "metadata.namespace": "tether"}

var varRef = regexp.MustCompile(`\$\$|\$\(([^)]*)\)`)

// expand replaces $(NAME) with the value of NAME in env, as the kubelet
// does, and returns the names it could not resolve.
func expand(s string, env environment) (string, []string) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		name := m[2 : len(m)-1]
		for i := len(env) - 1; i >= 0; i-- {
			if env[i].name == name {
				return env[i].value
			}
		}
		missing = append(missing, name)
		return m
	})
	return out, missing
}

// containerEnv resolves a container's environment and returns what could
// not be resolved: a missing ConfigMap or key, a $(NAME) that is not defined
// before it, a downward API field that does not exist.
func containerEnv(r *rendered, namespace string, c *corev1.Container) (environment, []string) {
	var env environment
	var fails []string
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			continue // a Secret's keys are not in the manifests
		}
		o := find(r, "ConfigMap", namespace, from.ConfigMapRef.Name)
		if o == nil {
			if from.ConfigMapRef.Optional == nil || !*from.ConfigMapRef.Optional {
				fails = append(fails, fmt.Sprintf("envFrom configMapRef %q: no such ConfigMap in the rendering", from.ConfigMapRef.Name))
			}
			continue
		}
		data := o.obj.(*corev1.ConfigMap).Data
		for _, k := range slices.Sorted(maps.Keys(data)) {
			env = append(env, envVar{name: from.Prefix + k, value: data[k], set: true, from: "ConfigMap " + o.name})
		}
	}
	for _, e := range c.Env {
		v := envVar{name: e.Name, from: "env", set: true}
		switch src := e.ValueFrom; {
		case src == nil:
			expanded, missing := expand(e.Value, env)
			for _, m := range missing {
				fails = append(fails, fmt.Sprintf("env[%s].value %q: $(%s) is not defined before it", e.Name, e.Value, m))
			}
			v.value = expanded
		case src.FieldRef != nil:
			if !downwardAPI.MatchString(src.FieldRef.FieldPath) {
				fails = append(fails, fmt.Sprintf("env[%s].valueFrom.fieldRef.fieldPath %q: not a downward API field", e.Name, src.FieldRef.FieldPath))
			}
			v.value, v.set = standIns[src.FieldRef.FieldPath], false
			v.from = "fieldRef " + src.FieldRef.FieldPath
		case src.ConfigMapKeyRef != nil:
			o := find(r, "ConfigMap", namespace, src.ConfigMapKeyRef.Name)
			val, ok := "", false
			if o != nil {
				val, ok = o.obj.(*corev1.ConfigMap).Data[src.ConfigMapKeyRef.Key]
			}
			if !ok && (src.ConfigMapKeyRef.Optional == nil || !*src.ConfigMapKeyRef.Optional) {
				fails = append(fails, fmt.Sprintf("env[%s].valueFrom.configMapKeyRef: no key %q in a ConfigMap %q of the rendering", e.Name, src.ConfigMapKeyRef.Key, src.ConfigMapKeyRef.Name))
			}
			v.value, v.set = val, ok
		default:
			v.set = false // a Secret or a resource field: resolved at run time
		}
		env = append(env, v)
	}
	return env, fails
}

// checkEnv: every variable a tether binary is given is one it documents
// (a misspelt name is silently ignored by the binary, so it fails here), with
// a value it accepts; every reference resolves.
func checkEnv(r *rendered, ic *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			env, unresolved := containerEnv(r, p.owner.namespace, c.c)
			for _, u := range unresolved {
				fails = append(fails, c.where(u))
			}
			for _, arg := range slices.Concat(c.c.Command, c.c.Args) {
				if _, missing := expand(arg, env); len(missing) > 0 {
					fails = append(fails, fmt.Sprintf("%s: %q refers to $(%s), which the container's environment does not define", c.where("command/args"), arg, strings.Join(missing, ", ")))
				}
			}
			bin := c.binaryName(ic)
			if bin == "" {
				continue // another project's image; its variables are its own
			}
			documented, ok := documentedEnv[bin]
			if !ok {
				continue // checkImages reports a binary the image does not have
			}
			seen := map[string]bool{}
			for _, e := range c.c.Env {
				if seen[e.Name] {
					fails = append(fails, fmt.Sprintf("%s: %s is defined twice", c.where("env"), e.Name))
				}
				seen[e.Name] = true
			}
			for _, v := range env {
				if auxiliaryEnv[v.name] {
					continue
				}
				valid, ok := documented[v.name]
				if !ok {
					fails = append(fails, fmt.Sprintf("%s: %s (from %s) is not a setting of %s (it reads %s)",
						c.where("env"), v.name, v.from, bin, strings.Join(slices.Sorted(maps.Keys(documented)), ", ")))
					continue
				}
				if !v.set {
					continue
				}
				if err := valid(v.value); err != nil {
					fails = append(fails, fmt.Sprintf("%s: %s=%q (from %s): %v", c.where("env"), v.name, v.value, v.from, err))
				}
			}
		}
	}
	return fails
}
