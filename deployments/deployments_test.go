package deployments

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// results are the failures of every check on one kustomization, by check.
type results map[string][]string

// allCheckNames are the checks in the order they run.
func allCheckNames() []string {
	names := []string{"kustomization", "decode"}
	for _, c := range manifestChecks {
		names = append(names, c.name)
	}
	return names
}

// runChecks checks one kustomization directory: its kustomization file
// first (so that nothing remote is fetched), then the rendering.
func runChecks(dir string, ic *imageContract) (*rendered, results, error) {
	res := results{}
	if fails := checkKustomization(dir); len(fails) > 0 {
		res["kustomization"] = fails
		return nil, res, nil
	}
	r, err := render(dir)
	if err != nil {
		return nil, res, err
	}
	res["decode"] = r.decodeErrors
	for _, c := range manifestChecks {
		res[c.name] = c.run(r, ic)
	}
	return r, res, nil
}

func contract(t *testing.T) *imageContract {
	t.Helper()
	ic, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	return ic
}

// TestManifests renders every kustomization under deployments/ and runs
// every check on it.
func TestManifests(t *testing.T) {
	t.Parallel()
	ic := contract(t)
	dirs := findKustomizations(t, ".", "testdata")
	for _, want := range []string{"base/forwarder", "base/echo-group", "overlays/etcd", "overlays/example"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("no kustomization found in %s (found %v)", want, dirs)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			r, res, err := runChecks(dir, ic)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range allCheckNames() {
				t.Run(name, func(t *testing.T) {
					for _, f := range res[name] {
						t.Error(f)
					}
				})
			}
			if r != nil && len(pods(r)) == 0 {
				t.Errorf("%s renders no workload; the checks examined nothing", dir)
			}
		})
	}
}

// TestRenderedWorkloads pins what the example and etcd overlays deploy, so
// that a kustomization that silently drops a base fails.
func TestRenderedWorkloads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"overlays/example", []string{"DaemonSet tether/tether-forwarder", "StatefulSet tether/echo"}},
		{"overlays/etcd", []string{"DaemonSet tether/tether-forwarder", "StatefulSet tether/echo", "StatefulSet tether/etcd"}},
	} {
		r, err := render(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range pods(r) {
			got = append(got, p.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s renders workloads %v, want %v", tc.dir, got, tc.want)
		}
		for _, p := range pods(r) {
			for _, c := range p.containers() {
				if repo, tag, digest := splitImage(c.c.Image); repo == contract(t).repo && digest == "" && (tag == "" || tag == "latest") {
					t.Errorf("%s: %s: image %s; the overlay pins a tag or digest with images:", tc.dir, c.where("image"), c.c.Image)
				}
			}
			if ss, ok := p.owner.obj.(*appsv1.StatefulSet); ok && ss.Name == "echo" && (ss.Spec.Replicas == nil || *ss.Spec.Replicas != 3) {
				t.Errorf("%s: %s: want 3 replicas", tc.dir, p)
			}
		}
	}
}

// brokenCase is a kustomization under testdata/broken and, by check, a part
// of the message that check must report.
type brokenCase struct {
	dir  string
	want map[string]string
}

// brokenCases are kustomizations under testdata/broken, each broken in one
// way, and the check that must catch it (with a part of its message). No
// other check may fail: a case breaks one thing.
var brokenCases = []brokenCase{
	{"remote-base", map[string]string{"kustomization": "is remote"}},
	{"deprecated-kustomize-field", map[string]string{"kustomization": "commonLabels is deprecated"}},
	{"misspelled-field", map[string]string{"decode": `unknown field "spec.template.spec.containers[0].imagePullPolcy"`}},
	{"deprecated-api", map[string]string{"decode": "extensions/v1beta1"}},
	{"bad-port-name", map[string]string{"names": "metrics-endpoint"}},
	{"selector-mismatch", map[string]string{"selectors": "does not match spec.template.metadata.labels"}},
	{"service-selects-nothing", map[string]string{"selectors": "selects no pod template"}},
	{"missing-volume", map[string]string{"volumes": `volume "socket" is not declared`}},
	{"probe-undeclared-port", map[string]string{"ports": "containers[member].readinessProbe.tcpSocket.port: grcp is not a port the container declares"}},
	{"metrics-addr-mismatch", map[string]string{"ports": "TETHER_METRICS_ADDR=:9091 listens on port 9091", "forwarder": "not the metrics port 9091"}},
	{"wrong-image", map[string]string{"images": "ghcr.io/tether-mesh/tehter:dev\" is neither the image the Dockerfile builds"}},
	{"unknown-binary", map[string]string{"images": "runs /usr/local/bin/tether-echo, which the Dockerfile does not build"}},
	{"privileged", map[string]string{"security": "securityContext.privileged: must not be true"}},
	{"root-member", map[string]string{"security": "containers[member].securityContext.runAsUser: want a numeric non-root user"}},
	{"no-limits", map[string]string{"resources": "no memory limit"}},
	{"env-typo", map[string]string{"env": "TETHER_LISTEN_ULR (from ConfigMap"}},
	{"env-bad-value", map[string]string{"env": `TETHER_SELECTION_POLICY="round-robin"`}},
	{"member-not-in-group", map[string]string{"socket": "is not in the tether group 65532"}},
	{"socket-mode", map[string]string{"socket": `TETHER_SOCKET_MODE="0666"`}},
	{"member-wrong-socket", map[string]string{"socket": "reaches /var/lib/tether/tether.sock on the host; the forwarder's socket is /var/lib/tether/forwarder.sock"}},
	{"mixed-view-providers", map[string]string{"views": "different view providers"}},
	{"etcd-wrong-port", map[string]string{"views": "Service tether/etcd serves no port 2380"}},
	{"short-grace-period", map[string]string{"forwarder": "terminationGracePeriodSeconds: want more than 10s"}},
	{"member-loopback-channel", map[string]string{"member": `TETHER_TCP_CHANNEL_ADDR="127.0.0.1:7200": clients on other nodes dial this address`}},
}

// TestBrokenManifests proves that the checks can fail: each broken
// kustomization is caught by the check it targets, and only by that one.
func TestBrokenManifests(t *testing.T) {
	t.Parallel()
	ic := contract(t)
	covered := map[string]bool{}
	for _, tc := range brokenCases {
		for name := range tc.want {
			covered[name] = true
		}
		t.Run(tc.dir, func(t *testing.T) {
			t.Parallel()
			_, res, err := runChecks(filepath.Join("testdata", "broken", tc.dir), ic)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range allCheckNames() {
				fails, want := res[name], tc.want[name]
				switch {
				case want == "" && len(fails) > 0:
					t.Errorf("check %s failed too; the case should break one thing:\n  %s", name, strings.Join(fails, "\n  "))
				case want != "" && len(fails) == 0:
					t.Errorf("check %s did not catch it", name)
				case want != "" && !slices.ContainsFunc(fails, func(f string) bool { return strings.Contains(f, want) }):
					t.Errorf("check %s failed, but no message contains %q:\n  %s", name, want, strings.Join(fails, "\n  "))
				}
			}
		})
	}
	for _, name := range allCheckNames() {
		if !covered[name] {
			t.Errorf("no broken case proves that check %s can fail", name)
		}
	}
	// Every case directory is in the table, and every entry has a directory.
	entries, err := os.ReadDir(filepath.Join("testdata", "broken"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if !slices.ContainsFunc(brokenCases, func(c brokenCase) bool { return c.dir == e.Name() }) {
			t.Errorf("testdata/broken/%s is not in brokenCases", e.Name())
		}
	}
}

// TestDockerfile checks the repository's Dockerfile and .dockerignore, and
// the contract the manifests are held to.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	in, err := readDockerInputs()
	if err != nil {
		t.Fatal(err)
	}
	ic, fails := checkDockerfile(in)
	for _, f := range fails {
		t.Error(f)
	}
	if ic == nil {
		t.FailNow()
	}
	want := &imageContract{
		repo: "ghcr.io/tether-mesh/tether",
		binaries: map[string]string{
			"/usr/local/bin/tether-forwarder":   "./cmd/forwarder",
			"/usr/local/bin/tether-echo-member": "./examples/echo-member",
			"/usr/local/bin/tether-socket-dir":  "./cmd/tether-socket-dir",
		},
		entrypoint: "/usr/local/bin/tether-forwarder",
		uid:        65532,
		gid:        65532,
	}
	if got, want := fmt.Sprintf("%+v", *ic), fmt.Sprintf("%+v", *want); got != want {
		t.Errorf("the Dockerfile's contract is\n  %s\nwant\n  %s", got, want)
	}
}

// TestBrokenDockerfiles proves that the Dockerfile checks can fail: each
// case changes the real file in one place.
func TestBrokenDockerfiles(t *testing.T) {
	t.Parallel()
	real, err := readDockerInputs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"root user", "Dockerfile", "USER 65532:65532", "USER 0:0", "must not run as root"},
		{"named user", "Dockerfile", "USER 65532:65532", "USER nonroot", "want numeric uid:gid"},
		{"shell entrypoint", "Dockerfile", `ENTRYPOINT ["/usr/local/bin/tether-forwarder"]`, "ENTRYPOINT /usr/local/bin/tether-forwarder", "want the exec form"},
		{"entrypoint not installed", "Dockerfile", `ENTRYPOINT ["/usr/local/bin/tether-forwarder"]`, `ENTRYPOINT ["/usr/local/bin/forwarder"]`, "not a binary the image installs"},
		{"cgo", "Dockerfile", "ENV CGO_ENABLED=0", "ENV CGO_ENABLED=1", `CGO_ENABLED is "1"`},
		{"no trimpath", "Dockerfile", "go build -trimpath -ldflags=\"-s -w\" -o /out/tether-forwarder", "go build -ldflags=\"-s -w\" -o /out/tether-forwarder", "no -trimpath"},
		{"no module cache", "Dockerfile", "--mount=type=cache,target=/go/pkg/mod \\\n    --mount=type=cache,target=/root/.cache/go-build", "--mount=type=cache,target=/root/.cache/go-build", "no cache mount for /go/pkg/mod"},
		{"old go", "Dockerfile", "ARG GO_VERSION=1.26", "ARG GO_VERSION=1.22", "want Go 1.26"},
		{"fat base", "Dockerfile", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:12", "want gcr.io/distroless/static-debian12:nonroot or scratch"},
		{"binary not copied", "Dockerfile", " /out/tether-socket-dir /usr/local/bin/", " /usr/local/bin/", "is built but not copied"},
		{"no such package", "Dockerfile", "./examples/echo-member", "./examples/echo-membr", "examples/echo-membr"},
		{"wrong source label", "Dockerfile", `org.opencontainers.image.source="https://github.com/tether-mesh/tether"`, `org.opencontainers.image.source="https://github.com/example/tether"`, "org.opencontainers.image.source"},
		{"missing label", "Dockerfile", `org.opencontainers.image.licenses="Apache-2.0" \`, `\`, "no LABEL org.opencontainers.image.licenses"},
		{"context excludes sources", ".dockerignore", "\ndocs\n", "\ndocs\ncmd\n", "excludes cmd/forwarder"},
		{"context keeps .git", ".dockerignore", "\n.git\n", "\n", "does not exclude .git"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := real
			text := map[string]*string{"Dockerfile": &in.dockerfile, ".dockerignore": &in.dockerignore}[tc.file]
			if strings.Count(*text, tc.old) != 1 {
				t.Fatalf("%s does not contain %q exactly once; update the case", tc.file, tc.old)
			}
			*text = strings.Replace(*text, tc.old, tc.new, 1)
			_, fails := checkDockerfile(in)
			if !slices.ContainsFunc(fails, func(f string) bool { return strings.Contains(f, tc.want) }) {
				t.Errorf("no failure contains %q; got:\n  %s", tc.want, strings.Join(fails, "\n  "))
			}
		})
	}
}
