package deployments

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The checks that run on every rendered kustomization. Each takes the
// rendering and the Dockerfile's contract and returns one message per
// problem, naming the object and the field. This file holds the list, the
// helpers, and the checks of names, selectors, volumes, ports, images,
// security and resources; env_test.go the environment check; wiring_test.go
// the socket, views and forwarder checks.

// check is one named check of a rendering.
type check struct {
	name string
	run  func(r *rendered, ic *imageContract) []string
}

// manifestChecks run, in this order, on every rendering. "kustomization"
// (checkKustomization, before kustomize runs) and "decode" (strict
// decoding, while rendering) come before them.
var manifestChecks = []check{
	{"names", checkNames},
	{"selectors", checkSelectors},
	{"volumes", checkVolumes},
	{"ports", checkPorts},
	{"images", checkImages},
	{"security", checkSecurity},
	{"resources", checkResources},
	{"env", checkEnv},
	{"socket", checkSocket},
	{"views", checkViews},
	{"forwarder", checkForwarder},
	{"member", checkMember},
}

// The deployment's conventions, from the forwarder's documented configuration.
const (
	// forwarderStopBound is how long the forwarder may take to stop after SIGTERM.
	forwarderStopBound = 10 * time.Second
	// defaultForwarderURL is TETHER_LISTEN_URL's default, and TETHER_FORWARDER_URL's.
	defaultForwarderURL = "unix:///var/lib/tether/forwarder.sock"
	// defaultMetricsAddr is TETHER_METRICS_ADDR's default.
	defaultMetricsAddr = ":9090"
	// socketMode is the mode the deployment gives the forwarder's socket: the
	// owner and the tether group may connect, nobody else.
	socketMode = "0660"
	// socketDirBinary is the init step that prepares the shared directory.
	socketDirBinary = "tether-socket-dir"
)

// thirdPartyImages are the images other than tether's that a manifest may
// run, each with a pinned tag.
var thirdPartyImages = map[string]bool{
	"quay.io/coreos/etcd":  true,
	"registry.k8s.io/etcd": true,
}

// pod is a pod template and the object that owns it.
type pod struct {
	owner    *object
	selector *metav1.LabelSelector
	labels   map[string]string
	spec     *corev1.PodSpec
	strategy string // DaemonSet update strategy, "" for other kinds
}

func (p *pod) String() string { return p.owner.String() }

// pods returns the pod templates of a rendering.
func pods(r *rendered) []*pod {
	var ps []*pod
	for _, o := range r.objects {
		switch w := o.obj.(type) {
		case *appsv1.DaemonSet:
			ps = append(ps, &pod{o, w.Spec.Selector, w.Spec.Template.Labels, &w.Spec.Template.Spec, string(w.Spec.UpdateStrategy.Type)})
		case *appsv1.StatefulSet:
			ps = append(ps, &pod{o, w.Spec.Selector, w.Spec.Template.Labels, &w.Spec.Template.Spec, ""})
		case *appsv1.Deployment:
			ps = append(ps, &pod{o, w.Spec.Selector, w.Spec.Template.Labels, &w.Spec.Template.Spec, ""})
		}
	}
	return ps
}

// container is a container of a pod template, init or not.
type container struct {
	pod  *pod
	c    *corev1.Container
	init bool
}

// field names the container in a message: spec.template.spec.containers[forwarder].
func (c container) field() string {
	list := "containers"
	if c.init {
		list = "initContainers"
	}
	return fmt.Sprintf("spec.template.spec.%s[%s]", list, c.c.Name)
}

func (c container) where(field string) string {
	if field == "" {
		return fmt.Sprintf("%s: %s", c.pod, c.field())
	}
	return fmt.Sprintf("%s: %s.%s", c.pod, c.field(), field)
}

func (p *pod) containers() []container {
	var cs []container
	for i := range p.spec.InitContainers {
		cs = append(cs, container{p, &p.spec.InitContainers[i], true})
	}
	for i := range p.spec.Containers {
		cs = append(cs, container{p, &p.spec.Containers[i], false})
	}
	return cs
}

// binaryName is the base name of the tether binary the container runs, or "".
func (c container) binaryName(ic *imageContract) string {
	if b := ic.binaryOf(c.c.Image, c.c.Command); b != "" {
		return path.Base(b)
	}
	return ""
}

func find(r *rendered, kind, namespace, name string) *object {
	for _, o := range r.objects {
		if o.kind == kind && o.namespace == namespace && o.name == name {
			return o
		}
	}
	return nil
}

func services(r *rendered) []*corev1.Service {
	var ss []*corev1.Service
	for _, o := range r.objects {
		if s, ok := o.obj.(*corev1.Service); ok {
			ss = append(ss, s)
		}
	}
	return ss
}

// selects reports whether a Service selects a pod template's pods.
func selects(s *corev1.Service, p *pod) bool {
	return len(s.Spec.Selector) > 0 && s.Namespace == p.owner.namespace &&
		labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.labels))
}

// checkNames: every name is one the API server accepts: object names, label
// keys and values, container, port, volume and environment variable names.
func checkNames(r *rendered, _ *imageContract) []string {
	var fails []string
	bad := func(where, value string, errs []string) {
		if len(errs) > 0 {
			fails = append(fails, fmt.Sprintf("%s: %q is not a valid name: %s", where, value, strings.Join(errs, "; ")))
		}
	}
	labelSet := func(where string, m map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			bad(where+" key", k, validation.IsQualifiedName(k))
			bad(where+"["+k+"]", m[k], validation.IsValidLabelValue(m[k]))
		}
	}
	for _, o := range r.objects {
		switch o.kind {
		case "Service", "Namespace":
			bad(o.String()+": metadata.name", o.name, validation.IsDNS1035Label(o.name))
		case "StatefulSet", "DaemonSet", "Deployment":
			// Their names become pod names and label values.
			bad(o.String()+": metadata.name", o.name, validation.IsDNS1123Label(o.name))
		default:
			bad(o.String()+": metadata.name", o.name, validation.IsDNS1123Subdomain(o.name))
		}
		if m, ok := o.obj.(metav1.Object); ok {
			labelSet(o.String()+": metadata.labels", m.GetLabels())
			for k := range m.GetAnnotations() {
				bad(o.String()+": metadata.annotations key", k, validation.IsQualifiedName(k))
			}
		}
		if s, ok := o.obj.(*corev1.Service); ok {
			for _, p := range s.Spec.Ports {
				bad(o.String()+": spec.ports[].name", p.Name, validation.IsDNS1123Label(p.Name))
			}
		}
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			for k := range cm.Data {
				bad(o.String()+": data key", k, validation.IsConfigMapKey(k))
			}
		}
	}
	for _, p := range pods(r) {
		labelSet(p.String()+": spec.template.metadata.labels", p.labels)
		for _, v := range p.spec.Volumes {
			bad(p.String()+": spec.template.spec.volumes[].name", v.Name, validation.IsDNS1123Label(v.Name))
		}
		for _, c := range p.containers() {
			bad(c.where("name"), c.c.Name, validation.IsDNS1123Label(c.c.Name))
			for _, port := range c.c.Ports {
				if port.Name != "" {
					bad(c.where("ports[].name"), port.Name, validation.IsValidPortName(port.Name))
				}
			}
			for _, e := range c.c.Env {
				bad(c.where("env[].name"), e.Name, validation.IsEnvVarName(e.Name))
			}
		}
	}
	return fails
}

// checkSelectors: a workload's selector selects its own pod template; a
// Service selects the pods of some workload of the rendering; a
// StatefulSet's serviceName is a headless Service that selects its pods.
func checkSelectors(r *rendered, _ *imageContract) []string {
	var fails []string
	ps := pods(r)
	for _, p := range ps {
		if p.selector == nil || (len(p.selector.MatchLabels) == 0 && len(p.selector.MatchExpressions) == 0) {
			fails = append(fails, p.String()+": spec.selector is empty")
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.selector)
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: spec.selector: %v", p, err))
			continue
		}
		if !sel.Matches(labels.Set(p.labels)) {
			fails = append(fails, fmt.Sprintf("%s: spec.selector %s does not match spec.template.metadata.labels %v", p, sel, p.labels))
		}
		if ss, ok := p.owner.obj.(*appsv1.StatefulSet); ok {
			svc := find(r, "Service", p.owner.namespace, ss.Spec.ServiceName)
			switch {
			case ss.Spec.ServiceName == "":
				fails = append(fails, p.String()+": spec.serviceName is empty; want the headless Service that gives the pods their DNS names")
			case svc == nil:
				fails = append(fails, fmt.Sprintf("%s: spec.serviceName %q: no such Service in the rendering", p, ss.Spec.ServiceName))
			case svc.obj.(*corev1.Service).Spec.ClusterIP != corev1.ClusterIPNone:
				fails = append(fails, fmt.Sprintf("%s: spec.serviceName %q: the Service is not headless (spec.clusterIP: None)", p, ss.Spec.ServiceName))
			case !selects(svc.obj.(*corev1.Service), p):
				fails = append(fails, fmt.Sprintf("%s: spec.serviceName %q: the Service does not select the StatefulSet's pods", p, ss.Spec.ServiceName))
			}
		}
	}
	for _, s := range services(r) {
		o := find(r, "Service", s.Namespace, s.Name)
		if len(s.Spec.Selector) == 0 {
			fails = append(fails, o.String()+": spec.selector is empty; every Service here selects pods of the rendering")
			continue
		}
		if !slices.ContainsFunc(ps, func(p *pod) bool { return selects(s, p) }) {
			fails = append(fails, fmt.Sprintf("%s: spec.selector %v selects no pod template of the rendering", o, s.Spec.Selector))
		}
	}
	return fails
}

// checkVolumes: every volumeMount names a volume of its pod, no two mounts
// of a container share a path, every volume is mounted, and a hostPath is
// the shared tether directory and nothing else.
func checkVolumes(r *rendered, _ *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		declared := map[string]*corev1.Volume{}
		for i, v := range p.spec.Volumes {
			if declared[v.Name] != nil {
				fails = append(fails, fmt.Sprintf("%s: spec.template.spec.volumes: %q is declared twice", p, v.Name))
			}
			declared[v.Name] = &p.spec.Volumes[i]
			if v.HostPath != nil && path.Clean(v.HostPath.Path) != path.Dir(strings.TrimPrefix(defaultForwarderURL, "unix://")) {
				fails = append(fails, fmt.Sprintf("%s: spec.template.spec.volumes[%s].hostPath.path %q: the only host directory the deployment mounts is %s",
					p, v.Name, v.HostPath.Path, path.Dir(strings.TrimPrefix(defaultForwarderURL, "unix://"))))
			}
		}
		used := map[string]bool{}
		for _, c := range p.containers() {
			paths := map[string]bool{}
			for _, m := range c.c.VolumeMounts {
				used[m.Name] = true
				if declared[m.Name] == nil {
					fails = append(fails, fmt.Sprintf("%s: volume %q is not declared in spec.template.spec.volumes (declared: %s)",
						c.where("volumeMounts[mountPath="+m.MountPath+"].name"), m.Name, strings.Join(slices.Sorted(maps.Keys(declared)), ", ")))
				}
				if paths[path.Clean(m.MountPath)] {
					fails = append(fails, fmt.Sprintf("%s: two mounts at %s", c.where("volumeMounts"), m.MountPath))
				}
				paths[path.Clean(m.MountPath)] = true
			}
		}
		for _, name := range slices.Sorted(maps.Keys(declared)) {
			if !used[name] {
				fails = append(fails, fmt.Sprintf("%s: spec.template.spec.volumes[%s] is mounted by no container", p, name))
			}
		}
	}
	return fails
}

// declares reports whether a container declares a port, by name or number.
func declares(c *corev1.Container, port intstr.IntOrString) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		if port.Type == intstr.String {
			return p.Name == port.StrVal
		}
		return p.ContainerPort == port.IntVal
	})
}

func declaredPorts(c *corev1.Container) string {
	var s []string
	for _, p := range c.Ports {
		s = append(s, fmt.Sprintf("%s/%d", p.Name, p.ContainerPort))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// probePort returns the port a probe points at, and the probe's handler field.
func probePort(pr *corev1.Probe) (intstr.IntOrString, string, bool) {
	switch {
	case pr.HTTPGet != nil:
		return pr.HTTPGet.Port, "httpGet.port", true
	case pr.TCPSocket != nil:
		return pr.TCPSocket.Port, "tcpSocket.port", true
	case pr.GRPC != nil:
		return intstr.FromInt32(pr.GRPC.Port), "grpc.port", true
	}
	return intstr.IntOrString{}, "", false
}

// listenSettings are the settings that make a tether binary listen on TCP;
// the port they name must be one its container declares.
var listenSettings = []string{"TETHER_METRICS_ADDR", "TETHER_LISTEN_URL", "TETHER_TCP_CHANNEL_ADDR"}

// checkPorts: every probe, every Service's targetPort and every TCP port a
// tether binary is configured to listen on is a port its container declares,
// and no port is declared twice in a pod.
func checkPorts(r *rendered, ic *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		names, numbers := map[string]string{}, map[int32]string{}
		for _, c := range p.containers() {
			for _, port := range c.c.Ports {
				if other, dup := numbers[port.ContainerPort]; dup {
					fails = append(fails, fmt.Sprintf("%s: port %d is also declared by %s", c.where("ports"), port.ContainerPort, other))
				}
				numbers[port.ContainerPort] = c.c.Name
				if other, dup := names[port.Name]; dup && port.Name != "" {
					fails = append(fails, fmt.Sprintf("%s: port name %q is also declared by %s", c.where("ports"), port.Name, other))
				}
				names[port.Name] = c.c.Name
			}
			for _, pr := range []struct {
				field string
				probe *corev1.Probe
			}{{"livenessProbe", c.c.LivenessProbe}, {"readinessProbe", c.c.ReadinessProbe}, {"startupProbe", c.c.StartupProbe}} {
				if pr.probe == nil {
					continue
				}
				port, field, ok := probePort(pr.probe)
				if !ok {
					continue // exec probes name no port
				}
				if !declares(c.c, port) {
					fails = append(fails, fmt.Sprintf("%s: %s is not a port the container declares (declared: %s)",
						c.where(pr.field+"."+field), port.String(), declaredPorts(c.c)))
				}
			}
			if c.binaryName(ic) == "" {
				continue
			}
			env, _ := containerEnv(r, p.owner.namespace, c.c)
			for _, name := range listenSettings {
				v, ok := env.value(name)
				if !ok {
					if name != "TETHER_METRICS_ADDR" || c.binaryName(ic) != "tether-forwarder" {
						continue
					}
					v = defaultMetricsAddr
				}
				port, ok := tcpPort(v)
				if !ok {
					continue
				}
				if !declares(c.c, intstr.FromInt32(port)) {
					fails = append(fails, fmt.Sprintf("%s: %s=%s listens on port %d, which the container does not declare (declared: %s)",
						c.where("env"), name, v, port, declaredPorts(c.c)))
				}
			}
		}
	}
	for _, s := range services(r) {
		o := find(r, "Service", s.Namespace, s.Name)
		for _, p := range pods(r) {
			if !selects(s, p) {
				continue
			}
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				if !slices.ContainsFunc(p.containers(), func(c container) bool { return !c.init && declares(c.c, target) }) {
					fails = append(fails, fmt.Sprintf("%s: spec.ports[%s].targetPort %s is not a port that %s's containers declare",
						o, sp.Name, target.String(), p))
				}
			}
		}
	}
	return fails
}

// tcpPort returns the port of a host:port or tcp:// setting.
func tcpPort(v string) (int32, bool) {
	if rest, ok := strings.CutPrefix(v, "tcp://"); ok {
		v = rest
	} else if strings.Contains(v, "://") {
		return 0, false
	}
	i := strings.LastIndex(v, ":")
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[i+1:], 10, 32)
	if err != nil {
		return 0, false
	}
	return int32(n), true
}

// checkImages: a container runs tether's image (the repository the
// Dockerfile publishes) and a binary that the Dockerfile installs, or an
// allowed third-party image pinned to a tag.
func checkImages(r *rendered, ic *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			repo, tag, digest := splitImage(c.c.Image)
			switch {
			case repo == ic.repo:
				if tag == "" && digest == "" {
					fails = append(fails, fmt.Sprintf("%s: %q has no tag", c.where("image"), c.c.Image))
				}
				bin := ic.binaryOf(c.c.Image, c.c.Command)
				if _, ok := ic.binaries[bin]; !ok {
					fails = append(fails, fmt.Sprintf("%s: runs %s, which the Dockerfile does not build into the image (it installs %s)",
						c.where("command"), bin, strings.Join(slices.Sorted(maps.Keys(ic.binaries)), ", ")))
				}
			case thirdPartyImages[repo]:
				if digest == "" && (tag == "" || tag == "latest") {
					fails = append(fails, fmt.Sprintf("%s: %q: pin a version tag or digest", c.where("image"), c.c.Image))
				}
			default:
				fails = append(fails, fmt.Sprintf("%s: %q is neither the image the Dockerfile builds (%s) nor an allowed third-party image",
					c.where("image"), c.c.Image, ic.repo))
			}
		}
	}
	return fails
}

// isSocketDirInit reports whether a container is the init step that
// prepares the shared directory: the one container allowed to run as root.
func isSocketDirInit(c container, ic *imageContract) bool {
	return c.init && c.binaryName(ic) == socketDirBinary
}

// checkSecurity: no pod uses the host's network, PID or IPC namespaces or
// mounts a service account token; every container runs with seccomp
// RuntimeDefault, not privileged, without privilege escalation, with a
// read-only root file system, all capabilities dropped, as a non-root user.
// The one exception is the socket-dir init container: root, with CHOWN and
// FOWNER only.
func checkSecurity(r *rendered, ic *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		s := p.spec
		if s.HostNetwork || s.HostPID || s.HostIPC {
			fails = append(fails, fmt.Sprintf("%s: spec.template.spec: hostNetwork/hostPID/hostIPC must be false", p))
		}
		if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
			fails = append(fails, fmt.Sprintf("%s: spec.template.spec.automountServiceAccountToken: want false; no pod here calls the Kubernetes API", p))
		}
		psc := s.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		for _, c := range p.containers() {
			sc := c.c.SecurityContext
			if sc == nil {
				fails = append(fails, c.where("securityContext")+": missing")
				continue
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				fails = append(fails, c.where("securityContext.seccompProfile")+": want type RuntimeDefault (here or in the pod's securityContext)")
			}
			if sc.Privileged != nil && *sc.Privileged {
				fails = append(fails, c.where("securityContext.privileged")+": must not be true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				fails = append(fails, c.where("securityContext.allowPrivilegeEscalation")+": want false")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				fails = append(fails, c.where("securityContext.readOnlyRootFilesystem")+": want true")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				fails = append(fails, c.where("securityContext.capabilities.drop")+": want [ALL]")
			}
			if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
				fails = append(fails, c.where("securityContext.procMount")+": want Default")
			}
			runAsUser, runAsNonRoot := sc.RunAsUser, sc.RunAsNonRoot
			if runAsUser == nil {
				runAsUser = psc.RunAsUser
			}
			if runAsNonRoot == nil {
				runAsNonRoot = psc.RunAsNonRoot
			}
			var added []string
			if sc.Capabilities != nil {
				for _, a := range sc.Capabilities.Add {
					added = append(added, string(a))
				}
			}
			if isSocketDirInit(c, ic) {
				for _, a := range added {
					if a != "CHOWN" && a != "FOWNER" {
						fails = append(fails, fmt.Sprintf("%s: %s: the socket-dir init container needs CHOWN and FOWNER only", c.where("securityContext.capabilities.add"), a))
					}
				}
				continue
			}
			if runAsNonRoot == nil || !*runAsNonRoot {
				fails = append(fails, c.where("securityContext.runAsNonRoot")+": want true (here or in the pod's securityContext)")
			}
			if runAsUser == nil || *runAsUser == 0 {
				fails = append(fails, c.where("securityContext.runAsUser")+": want a numeric non-root user (here or in the pod's securityContext)")
			}
			if len(added) > 0 {
				fails = append(fails, fmt.Sprintf("%s: %v: add no capability", c.where("securityContext.capabilities.add"), added))
			}
		}
	}
	return fails
}

// checkResources: every container, init containers too, requests and is
// limited in CPU and memory, and requests no more than its limit.
func checkResources(r *rendered, _ *imageContract) []string {
	var fails []string
	for _, p := range pods(r) {
		for _, c := range p.containers() {
			res := c.c.Resources
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := res.Requests[name]
				limit, hasLimit := res.Limits[name]
				if !hasReq {
					fails = append(fails, fmt.Sprintf("%s: no %s request", c.where("resources.requests"), name))
				}
				if !hasLimit {
					fails = append(fails, fmt.Sprintf("%s: no %s limit", c.where("resources.limits"), name))
				}
				if hasReq && hasLimit && req.Cmp(limit) > 0 {
					fails = append(fails, fmt.Sprintf("%s: %s request %s is above its limit %s", c.where("resources"), name, req.String(), limit.String()))
				}
			}
		}
	}
	return fails
}
