package deployments

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The checks of how the pieces are wired together: the socket between the
// forwarder and the members, the view provider they share, the forwarder's
// own deployment contract, and what a member needs to be reachable from
// other pods.

// settingOr returns a setting's value, or its default when unset.
func settingOr(env environment, name, def string) string {
	if v, ok := env.value(name); ok {
		return v
	}
	if env.has(name) {
		return "" // set at run time; the caller cannot check it
	}
	return def
}

// hostPathOf maps a path inside a container to the host path it reaches
// through a hostPath volume mount, or "".
func hostPathOf(p *pod, c *corev1.Container, inContainer string) string {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(inContainer), path.Clean(m.MountPath)+"/")
		if !ok {
			continue
		}
		for _, v := range p.spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				return path.Join(v.HostPath.Path, m.SubPath, rel)
			}
		}
	}
	return ""
}

func mountsHostPath(p *pod, c *corev1.Container, hostDir string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return slices.ContainsFunc(p.spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == m.Name && v.HostPath != nil && path.Clean(v.HostPath.Path) == hostDir
		})
	})
}

// effective returns a container's user and group, the container's
// securityContext taking precedence over the pod's.
func effective(p *pod, c *corev1.Container) (uid, gid *int64, groups []int64) {
	if psc := p.spec.SecurityContext; psc != nil {
		uid, gid, groups = psc.RunAsUser, psc.RunAsGroup, psc.SupplementalGroups
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	return uid, gid, groups
}

// flagValue returns the value of -name=value or --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		for _, prefix := range []string{"-" + name + "=", "--" + name + "="} {
			if v, ok := strings.CutPrefix(a, prefix); ok {
				return v, true
			}
		}
	}
	return "", false
}

// checkSocket checks the socket model: the forwarder's socket is a unix
// socket, mode 0660, in the shared host directory, which the socket-dir init
// container gives to the forwarder's user and group; every other container
// that mounts the directory is in that group, and a member that joins
// through the forwarder dials the forwarder's socket.
func checkSocket(r *rendered, ic *imageContract) []string {
	var fails []string
	type forwarder struct {
		socketHost string // the socket's path on the host
		group      int64
	}
	var fwds []forwarder
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			if c.binaryName(ic) != "tether-forwarder" {
				continue
			}
			env, _ := containerEnv(r, p.owner.namespace, c.c)
			if mode, ok := env.value("TETHER_SOCKET_MODE"); !ok || mode != socketMode {
				fails = append(fails, fmt.Sprintf("%s: TETHER_SOCKET_MODE=%q; want %s, so that members of the tether group can connect and nobody else",
					c.where("env"), mode, socketMode))
			}
			listen := settingOr(env, "TETHER_LISTEN_URL", defaultForwarderURL)
			u, err := url.Parse(listen)
			if err != nil || u.Scheme != "unix" {
				fails = append(fails, fmt.Sprintf("%s: TETHER_LISTEN_URL=%q; want a unix socket in the shared directory", c.where("env"), listen))
				continue
			}
			host := hostPathOf(p, c.c, u.Path)
			if host == "" {
				fails = append(fails, fmt.Sprintf("%s: TETHER_LISTEN_URL=%q: %s is not on a hostPath volume the container mounts", c.where("env"), listen, u.Path))
				continue
			}
			uid, gid, _ := effective(p, c.c)
			if uid == nil || gid == nil {
				fails = append(fails, c.where("securityContext")+": runAsUser and runAsGroup must be set: they own the socket directory")
				continue
			}
			fwds = append(fwds, forwarder{host, *gid})

			// The init container that prepares the directory.
			dir := path.Dir(u.Path)
			i := slices.IndexFunc(p.containers(), func(ic2 container) bool { return isSocketDirInit(ic2, ic) })
			if i < 0 {
				fails = append(fails, fmt.Sprintf("%s: no %s init container: the kubelet creates %s as root, mode 0755, and the forwarder could not create its socket",
					p, socketDirBinary, path.Dir(host)))
				continue
			}
			init := p.containers()[i]
			args := slices.Concat(init.c.Command[1:], init.c.Args)
			want := map[string]string{"dir": dir, "uid": strconv.FormatInt(*uid, 10), "gid": strconv.FormatInt(*gid, 10)}
			for _, k := range []string{"dir", "uid", "gid"} {
				if v, ok := flagValue(args, k); !ok || v != want[k] {
					fails = append(fails, fmt.Sprintf("%s: -%s=%s; want -%s=%s, from the forwarder's socket and securityContext", init.where("command"), k, v, k, want[k]))
				}
			}
			if m, ok := flagValue(args, "mode"); ok {
				n, err := strconv.ParseUint(m, 8, 32)
				if err != nil || n&0o070 != 0o070 || n&0o007 != 0 {
					fails = append(fails, fmt.Sprintf("%s: -mode=%s; want rwx for the group and nothing for others, e.g. 3770", init.where("command"), m))
				}
			}
			if hostPathOf(p, init.c, u.Path) != host {
				fails = append(fails, fmt.Sprintf("%s: does not mount the directory of the forwarder's socket at %s", init.where("volumeMounts"), dir))
			}
		}
	}
	if len(fwds) > 1 {
		fails = append(fails, fmt.Sprintf("%d forwarders in one rendering; want one DaemonSet", len(fwds)))
	}
	// Without a forwarder in the rendering, members must fit the defaults:
	// the documented socket and the image's group.
	want := forwarder{socketHost: strings.TrimPrefix(defaultForwarderURL, "unix://"), group: ic.gid}
	if len(fwds) > 0 {
		want = fwds[0]
	}
	hostDir := path.Dir(want.socketHost)
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			bin := c.binaryName(ic)
			if bin == "tether-forwarder" || isSocketDirInit(c, ic) {
				continue
			}
			env, _ := containerEnv(r, p.owner.namespace, c.c)
			if mountsHostPath(p, c.c, hostDir) {
				_, gid, groups := effective(p, c.c)
				if (gid == nil || *gid != want.group) && !slices.Contains(groups, want.group) {
					fails = append(fails, fmt.Sprintf("%s: mounts %s but is not in the tether group %d (spec.template.spec.securityContext.supplementalGroups): it cannot reach the socket (mode %s)",
						c.where(""), hostDir, want.group, socketMode))
				}
			}
			if bin != "tether-echo-member" {
				continue
			}
			if settingOr(env, "TETHER_VIEW_PROVIDER", "embedded") == "embedded" {
				dial := settingOr(env, "TETHER_FORWARDER_URL", defaultForwarderURL)
				u, err := url.Parse(dial)
				if err != nil || u.Scheme != "unix" {
					continue // a tcp forwarder URL: nothing to match on the host
				}
				switch got := hostPathOf(p, c.c, u.Path); got {
				case want.socketHost:
				case "":
					fails = append(fails, fmt.Sprintf("%s: TETHER_FORWARDER_URL=%q: %s is not on a hostPath volume the container mounts; the forwarder's socket is %s on the host",
						c.where("env"), dial, u.Path, want.socketHost))
				default:
					fails = append(fails, fmt.Sprintf("%s: TETHER_FORWARDER_URL=%q reaches %s on the host; the forwarder's socket is %s",
						c.where("env"), dial, got, want.socketHost))
				}
			}
		}
	}
	return fails
}

// checkViews: forwarders and members of a rendering use the same view
// provider; with etcd, the endpoints are set and, when they name a Service
// of the rendering, a port it serves; with embedded, no endpoints are set
// (they would be ignored, a sign of a half-applied overlay).
func checkViews(r *rendered, ic *imageContract) []string {
	var fails []string
	providers := map[string][]string{} // provider -> containers using it
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			bin := c.binaryName(ic)
			if bin != "tether-forwarder" && bin != "tether-echo-member" {
				continue
			}
			env, _ := containerEnv(r, p.owner.namespace, c.c)
			provider := settingOr(env, "TETHER_VIEW_PROVIDER", "embedded")
			providers[provider] = append(providers[provider], c.where(""))
			endpoints, hasEndpoints := env.value("TETHER_ETCD_ENDPOINTS")
			switch provider {
			case "embedded":
				if hasEndpoints {
					fails = append(fails, fmt.Sprintf("%s: TETHER_ETCD_ENDPOINTS is set but TETHER_VIEW_PROVIDER is embedded", c.where("env")))
				}
			case "etcd":
				if !hasEndpoints {
					fails = append(fails, fmt.Sprintf("%s: TETHER_VIEW_PROVIDER=etcd without TETHER_ETCD_ENDPOINTS", c.where("env")))
				}
				for e := range strings.SplitSeq(endpoints, ",") {
					u, err := url.Parse(strings.TrimSpace(e))
					if err != nil {
						continue // checkEnv reports it
					}
					host, port := u.Hostname(), u.Port()
					svcName, rest, _ := strings.Cut(host, ".")
					if rest != "" && !strings.HasPrefix(rest+".", p.owner.namespace+".") {
						continue // another namespace, or outside the cluster
					}
					o := find(r, "Service", p.owner.namespace, svcName)
					if o == nil {
						continue
					}
					svc := o.obj.(*corev1.Service)
					if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return strconv.Itoa(int(sp.Port)) == port }) {
						fails = append(fails, fmt.Sprintf("%s: TETHER_ETCD_ENDPOINTS %s: Service %s serves no port %s", c.where("env"), e, o, port))
					}
				}
			}
		}
	}
	if len(providers) > 1 {
		var s []string
		for _, k := range slices.Sorted(maps.Keys(providers)) {
			s = append(s, fmt.Sprintf("%s: %s", k, strings.Join(providers[k], ", ")))
		}
		fails = append(fails, "forwarders and members use different view providers: "+strings.Join(s, "; "))
	}
	return fails
}

// checkForwarder: the forwarder runs as a DaemonSet, one pod per node,
// rolled one node at a time and never two on a node; it has time to stop
// cleanly; its name is its node's; its probes are /healthz and /readyz on
// the metrics port; and a Service exposes that port for scraping.
func checkForwarder(r *rendered, ic *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			if c.binaryName(ic) != "tether-forwarder" {
				continue
			}
			if c.init {
				fails = append(fails, c.where("")+": the forwarder is not an init container")
				continue
			}
			ds, ok := p.owner.obj.(*appsv1.DaemonSet)
			if !ok {
				fails = append(fails, fmt.Sprintf("%s: the forwarder runs in a %s; want a DaemonSet, one pod per node", p, p.owner.kind))
				continue
			}
			us := ds.Spec.UpdateStrategy
			switch {
			case us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil:
				fails = append(fails, fmt.Sprintf("%s: spec.updateStrategy: want RollingUpdate with maxUnavailable 1", p))
			default:
				if mu := us.RollingUpdate.MaxUnavailable; mu == nil || mu.String() != "1" {
					fails = append(fails, fmt.Sprintf("%s: spec.updateStrategy.rollingUpdate.maxUnavailable: want 1", p))
				}
				if ms := us.RollingUpdate.MaxSurge; ms != nil && ms.String() != "0" && ms.String() != "0%" {
					fails = append(fails, fmt.Sprintf("%s: spec.updateStrategy.rollingUpdate.maxSurge %s: want 0; two forwarders on a node would contend for its socket", p, ms.String()))
				}
			}
			if g := p.spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= forwarderStopBound {
				fails = append(fails, fmt.Sprintf("%s: spec.template.spec.terminationGracePeriodSeconds: want more than %v, the forwarder's stop bound", p, forwarderStopBound))
			}
			if !slices.ContainsFunc(c.c.Env, func(e corev1.EnvVar) bool {
				return e.Name == "TETHER_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
			}) {
				fails = append(fails, c.where("env")+": TETHER_NAME: want valueFrom.fieldRef.fieldPath spec.nodeName")
			}

			env, _ := containerEnv(r, p.owner.namespace, c.c)
			metricsAddr := settingOr(env, "TETHER_METRICS_ADDR", defaultMetricsAddr)
			metricsPort, ok := tcpPort(metricsAddr)
			if !ok {
				fails = append(fails, fmt.Sprintf("%s: TETHER_METRICS_ADDR=%q: no port", c.where("env"), metricsAddr))
				continue
			}
			// onMetrics reports whether a port reference is the metrics port.
			onMetrics := func(port intstr.IntOrString) bool {
				return slices.ContainsFunc(c.c.Ports, func(cp corev1.ContainerPort) bool {
					return cp.ContainerPort == metricsPort && ((port.Type == intstr.String && port.StrVal == cp.Name) || (port.Type == intstr.Int && port.IntVal == cp.ContainerPort))
				})
			}
			for _, pr := range []struct {
				field, path string
				probe       *corev1.Probe
			}{{"livenessProbe", "/healthz", c.c.LivenessProbe}, {"readinessProbe", "/readyz", c.c.ReadinessProbe}} {
				if pr.probe == nil || pr.probe.HTTPGet == nil {
					fails = append(fails, fmt.Sprintf("%s: want an httpGet probe on %s", c.where(pr.field), pr.path))
					continue
				}
				if pr.probe.HTTPGet.Path != pr.path {
					fails = append(fails, fmt.Sprintf("%s: %q; want %s", c.where(pr.field+".httpGet.path"), pr.probe.HTTPGet.Path, pr.path))
				}
				if !onMetrics(pr.probe.HTTPGet.Port) {
					fails = append(fails, fmt.Sprintf("%s: %s is not the metrics port %d (TETHER_METRICS_ADDR=%s)",
						c.where(pr.field+".httpGet.port"), pr.probe.HTTPGet.Port.String(), metricsPort, metricsAddr))
				}
			}
			if !slices.ContainsFunc(c.c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "metrics" && cp.ContainerPort == metricsPort }) {
				fails = append(fails, fmt.Sprintf("%s: want a port named metrics, %d (TETHER_METRICS_ADDR=%s), for scraping", c.where("ports"), metricsPort, metricsAddr))
			}
			scraped := slices.ContainsFunc(services(r), func(s *corev1.Service) bool {
				return selects(s, p) && slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return onMetrics(sp.TargetPort) })
			})
			if !scraped {
				fails = append(fails, fmt.Sprintf("%s: no Service selects the forwarder's pods with a targetPort on the metrics port %d", p, metricsPort))
			}
		}
	}
	return fails
}

// routable reports whether a host is one a peer on another node can dial:
// not empty, not a wildcard, not the loopback.
func routable(host string) bool {
	if host == "" || host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || (!ip.IsUnspecified() && !ip.IsLoopback())
}

// checkMember: an example member is given what it has no usable default
// for in a pod. Its group and its gRPC URL are required; the URL is
// registered in the view, so forwarders on other nodes dial it and it must
// be routable (the pod IP); with tcp channels, the channel address is
// advertised to clients the same way and defaults to the loopback; with shm
// channels, the channel sockets must be in the shared host directory, where
// clients on the node reach them (the default is a private directory on a
// read-only root file system).
func checkMember(r *rendered, ic *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			if c.binaryName(ic) != "tether-echo-member" {
				continue
			}
			env, _ := containerEnv(r, p.owner.namespace, c.c)
			for _, name := range []string{"TETHER_GROUP", "TETHER_LISTEN_URL"} {
				if !env.has(name) {
					fails = append(fails, fmt.Sprintf("%s: %s is required", c.where("env"), name))
				}
			}
			if listen, ok := env.value("TETHER_LISTEN_URL"); ok {
				if u, err := url.Parse(listen); err == nil && u.Scheme == "tcp" && !routable(u.Hostname()) {
					fails = append(fails, fmt.Sprintf("%s: TETHER_LISTEN_URL=%s: forwarders on other nodes dial this URL; use the pod IP, tcp://$(POD_IP):<port>", c.where("env"), listen))
				}
			}
			providers := strings.Split(settingOr(env, "TETHER_CHANNEL_PROVIDERS", "shm,tcp"), ",")
			if slices.Contains(providers, "tcp") {
				addr, ok := env.value("TETHER_TCP_CHANNEL_ADDR")
				host, _, err := net.SplitHostPort(addr)
				if !env.has("TETHER_TCP_CHANNEL_ADDR") || (ok && (err != nil || !routable(host))) {
					fails = append(fails, fmt.Sprintf("%s: TETHER_TCP_CHANNEL_ADDR=%q: clients on other nodes dial this address (the default is the loopback); use $(POD_IP):<port>", c.where("env"), addr))
				}
			}
			if slices.Contains(providers, "shm") {
				shm, ok := env.value("TETHER_SHM_DIR")
				if !env.has("TETHER_SHM_DIR") || (ok && hostPathOf(p, c.c, path.Join(shm, "x")) == "") {
					fails = append(fails, fmt.Sprintf("%s: TETHER_SHM_DIR=%q: the shm channel sockets must be on the shared host directory, where clients on the node reach them",
						c.where("env"), shm))
				}
			}
		}
	}
	return fails
}
