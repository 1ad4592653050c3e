package deployments

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizationNames are the file names kustomize reads in a directory.
var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// kustomizationFile returns the kustomization file of dir, or "".
func kustomizationFile(dir string) string {
	for _, n := range kustomizationNames {
		p := filepath.Join(dir, n)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// findKustomizations returns, sorted, every directory under root that holds a
// kustomization, leaving out the directories named in skip (and what is
// below them).
func findKustomizations(t *testing.T, root string, skip ...string) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if slices.Contains(skip, path) {
			return filepath.SkipDir
		}
		if kustomizationFile(path) != "" {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	slices.Sort(dirs)
	return dirs
}

// checkKustomization reads the kustomization of dir before kustomize does
// and refuses what would make the test fetch from the network or use
// deprecated fields: every resource, component and patch is a local path
// that exists, and there is no Helm chart. Kustomize clones a remote base
// with git; the test must stay offline.
func checkKustomization(dir string) []string {
	path := kustomizationFile(dir)
	if path == "" {
		return []string{dir + ": no kustomization file"}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return []string{fmt.Sprintf("%s: %v", path, err)}
	}
	var fails []string
	// Fields kustomize v5 deprecates, read by key so as not to use them.
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return []string{fmt.Sprintf("%s: %v", path, err)}
	}
	for _, field := range []string{"bases", "commonLabels", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags"} {
		if _, ok := raw[field]; ok {
			fails = append(fails, fmt.Sprintf("%s: %s is deprecated in kustomize v5 (use resources, labels, patches, replacements, images)", path, field))
		}
	}
	if len(k.HelmCharts) > 0 || len(k.HelmChartInflationGenerator) > 0 || k.HelmGlobals != nil {
		fails = append(fails, path+": helm charts are fetched and rendered at build time; not allowed here")
	}
	local := func(field, entry string) {
		if isRemote(entry) {
			fails = append(fails, fmt.Sprintf("%s: %s entry %q is remote; the manifests and their test must work offline", path, field, entry))
			return
		}
		if _, err := os.Stat(filepath.Join(dir, entry)); err != nil {
			fails = append(fails, fmt.Sprintf("%s: %s entry %q: %v", path, field, entry, err))
		}
	}
	for _, e := range k.Resources {
		local("resources", e)
	}
	for _, e := range k.Components {
		local("components", e)
	}
	for _, e := range k.Crds {
		local("crds", e)
	}
	for _, e := range k.Configurations {
		local("configurations", e)
	}
	for _, e := range slices.Concat(k.Generators, k.Transformers, k.Validators) {
		if !strings.Contains(e, "\n") { // an inline plugin config is not a path
			local("generators/transformers/validators", e)
		}
	}
	if p, ok := k.OpenAPI["path"]; ok {
		local("openapi.path", p)
	}
	for _, p := range k.Patches {
		if p.Path != "" {
			local("patches", p.Path)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range slices.Concat(g.EnvSources, g.FileSources) {
			if _, file, ok := strings.Cut(f, "="); ok {
				f = file
			}
			local("configMapGenerator", f)
		}
	}
	return fails
}

// isRemote reports whether a kustomization entry is a URL or a remote
// repository spec rather than a local path.
func isRemote(entry string) bool {
	return strings.Contains(entry, "://") || strings.HasPrefix(entry, "git@") ||
		strings.HasPrefix(entry, "github.com/") || strings.HasPrefix(entry, "gitlab.com/") ||
		strings.Contains(entry, "?ref=") || strings.Contains(entry, "//")
}

// object is one rendered resource, decoded into its Kubernetes API type.
type object struct {
	kind, namespace, name string
	obj                   runtime.Object
}

func (o *object) String() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

// rendered is the output of one kustomization: the objects that decoded, and
// what strict decoding found wrong.
type rendered struct {
	dir          string
	objects      []*object
	decodeErrors []string
}

// knownKinds are the kinds the checks understand, by their only served API
// version. An object of any other kind or version fails to decode, so that a
// new kind cannot slip past checks that were not written for it, and a
// deprecated API version is refused.
var knownKinds = map[string]string{
	"Namespace":      "v1",
	"ServiceAccount": "v1",
	"ConfigMap":      "v1",
	"Service":        "v1",
	"DaemonSet":      "apps/v1",
	"StatefulSet":    "apps/v1",
	"Deployment":     "apps/v1",
}

// strictDecoder decodes YAML into the typed objects of k8s.io/api the way
// the API server's strict field validation does: an unknown field, a field
// in the wrong case or a duplicate field is an error.
var strictDecoder = sync.OnceValue(func() runtime.Decoder {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := appsv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
})

// renderMu serializes kustomize builds: kustomize keeps its OpenAPI schema in
// a package variable that each build sets.
var renderMu sync.Mutex

// renderCache keeps each directory's rendering for the tests that share it.
var renderCache sync.Map // dir -> func() (*rendered, error)

// render builds the kustomization in dir with kustomize's default options
// (files only from within the kustomization's root or its bases, no plugins)
// and decodes every object strictly.
func render(dir string) (*rendered, error) {
	f, _ := renderCache.LoadOrStore(dir, sync.OnceValues(func() (*rendered, error) {
		return renderUncached(dir)
	}))
	return f.(func() (*rendered, error))()
}

func renderUncached(dir string) (*rendered, error) {
	renderMu.Lock()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	renderMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	r := &rendered{dir: dir}
	for _, res := range resMap.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", dir, res.CurId(), err)
		}
		id := fmt.Sprintf("%s %s", res.GetKind(), res.GetName())
		if ns := res.GetNamespace(); ns != "" {
			id = fmt.Sprintf("%s %s/%s", res.GetKind(), ns, res.GetName())
		}
		apiVersion := res.GetApiVersion()
		if want, ok := knownKinds[res.GetKind()]; !ok || want != apiVersion {
			r.decodeErrors = append(r.decodeErrors, fmt.Sprintf("%s: apiVersion %s kind %s is not one the checks know (%s); a deprecated API, or a kind to add to knownKinds and the checks",
				id, apiVersion, res.GetKind(), knownKindList()))
			continue
		}
		obj, _, err := strictDecoder().Decode(data, nil, nil)
		switch {
		case err == nil:
		case runtime.IsStrictDecodingError(err) && obj != nil:
			// The object decoded; only fields the type does not have were
			// refused. Record them and check the rest as usual.
			var sde interface{ Errors() []error }
			if errors.As(err, &sde) {
				for _, e := range sde.Errors() {
					r.decodeErrors = append(r.decodeErrors, fmt.Sprintf("%s: %v", id, e))
				}
			} else {
				r.decodeErrors = append(r.decodeErrors, fmt.Sprintf("%s: %v", id, err))
			}
		default:
			r.decodeErrors = append(r.decodeErrors, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		r.objects = append(r.objects, &object{kind: res.GetKind(), namespace: res.GetNamespace(), name: res.GetName(), obj: obj})
	}
	return r, nil
}

func knownKindList() string {
	var s []string
	for _, k := range slices.Sorted(maps.Keys(knownKinds)) {
		s = append(s, knownKinds[k]+" "+k)
	}
	return strings.Join(s, ", ")
}
