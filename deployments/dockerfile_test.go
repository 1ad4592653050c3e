package deployments

import (
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// repoRoot is the repository, seen from this package's directory (go test
// runs a package's tests in its directory).
const repoRoot = ".."

// imageContract is what the Dockerfile promises the manifests: the image's
// name, the binaries it installs and which one it runs by default.
type imageContract struct {
	// repo is the image's name without tag, e.g. ghcr.io/tether-mesh/tether.
	repo string
	// binaries maps an installed path (/usr/local/bin/tether-forwarder) to
	// the Go package built into it (./cmd/forwarder).
	binaries map[string]string
	// entrypoint is the binary the image runs when a container sets no command.
	entrypoint string
	// uid and gid are the image's USER.
	uid, gid int64
}

// binaryOf returns the path of the binary a container of the image runs, or
// "" when the container runs another image.
func (ic *imageContract) binaryOf(image string, command []string) string {
	if repo, _, _ := splitImage(image); repo != ic.repo {
		return ""
	}
	if len(command) > 0 {
		return command[0]
	}
	return ic.entrypoint
}

// splitImage splits an image reference into its repository, tag and digest.
func splitImage(image string) (repo, tag, digest string) {
	repo, digest, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

// dockerInstruction is one instruction of a Dockerfile, its continuation
// lines joined.
type dockerInstruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// dockerStage is one FROM and what follows it.
type dockerStage struct {
	name, image  string // image with the global ARGs expanded
	line         int
	instructions []dockerInstruction
}

// parseDockerfile splits a Dockerfile into stages. It knows comments, line
// continuations, and global ARG defaults in FROM; that is all this
// Dockerfile uses.
func parseDockerfile(text string) ([]*dockerStage, error) {
	var (
		instrs []dockerInstruction
		cur    strings.Builder
		start  int
	)
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(body)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		instrs = append(instrs, dockerInstruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a continued instruction", start)
	}
	globalArgs := map[string]string{}
	var stages []*dockerStage
	for _, in := range instrs {
		switch {
		case in.cmd == "ARG" && len(stages) == 0:
			for _, f := range strings.Fields(in.args) {
				k, v, _ := strings.Cut(f, "=")
				globalArgs[k] = v
			}
		case in.cmd == "FROM":
			var fields []string
			for _, f := range strings.Fields(in.args) {
				if !strings.HasPrefix(f, "--") {
					fields = append(fields, f)
				}
			}
			if len(fields) != 1 && (len(fields) != 3 || !strings.EqualFold(fields[1], "AS")) {
				return nil, fmt.Errorf("line %d: FROM %s: want an image and an optional AS name", in.line, in.args)
			}
			st := &dockerStage{image: os.Expand(fields[0], func(k string) string { return globalArgs[k] }), line: in.line}
			if len(fields) == 3 {
				st.name = fields[2]
			}
			stages = append(stages, st)
		case len(stages) == 0:
			return nil, fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
		default:
			st := stages[len(stages)-1]
			st.instructions = append(st.instructions, in)
		}
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return stages, nil
}

// shellWords splits a command line into words, honouring single and double
// quotes (enough for go build flags and LABEL values).
func shellWords(s string) []string {
	var (
		words []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// goBuild is one `go build` in the Dockerfile.
type goBuild struct {
	output, pkg string
	env         map[string]string // assignments before the command
	trimpath    bool
	ldflags     string
	mounts      []string // the RUN's --mount options
	line        int
}

// goBuilds finds the `go build` commands of a stage's RUN instructions.
func goBuilds(st *dockerStage) []goBuild {
	var builds []goBuild
	for _, in := range st.instructions {
		if in.cmd != "RUN" {
			continue
		}
		var mounts []string
		for _, cmdline := range regexp.MustCompile(`&&|;|\|\|`).Split(in.args, -1) {
			words := shellWords(cmdline)
			for len(words) > 0 && strings.HasPrefix(words[0], "--mount=") {
				mounts = append(mounts, strings.TrimPrefix(words[0], "--mount="))
				words = words[1:]
			}
			env := map[string]string{}
			for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
				k, v, _ := strings.Cut(words[0], "=")
				env[k] = v
				words = words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				continue
			}
			b := goBuild{env: env, mounts: mounts, line: in.line}
			var pkgs []string
			for i := 2; i < len(words); i++ {
				w := words[i]
				switch {
				case w == "-o" && i+1 < len(words):
					i++
					b.output = words[i]
				case strings.HasPrefix(w, "-o="):
					b.output = strings.TrimPrefix(w, "-o=")
				case w == "-trimpath":
					b.trimpath = true
				case w == "-ldflags" && i+1 < len(words):
					i++
					b.ldflags = words[i]
				case strings.HasPrefix(w, "-ldflags="):
					b.ldflags = strings.TrimPrefix(w, "-ldflags=")
				case strings.HasPrefix(w, "-"):
				default:
					pkgs = append(pkgs, w)
				}
			}
			if len(pkgs) == 1 {
				b.pkg = pkgs[0]
			}
			builds = append(builds, b)
		}
	}
	return builds
}

// stageEnv returns the ENV assignments of a stage.
func stageEnv(st *dockerStage) map[string]string {
	env := map[string]string{}
	for _, in := range st.instructions {
		if in.cmd != "ENV" {
			continue
		}
		words := shellWords(in.args)
		if len(words) == 2 && !strings.Contains(words[0], "=") { // ENV KEY value
			env[words[0]] = words[1]
			continue
		}
		for _, w := range words {
			k, v, _ := strings.Cut(w, "=")
			env[k] = v
		}
	}
	return env
}

// dockerInputs are the files the Dockerfile checks read.
type dockerInputs struct {
	dockerfile, dockerignore, gomod string
	// mainPackage reports why a package path (./cmd/forwarder) is not a
	// main package of the repository, or nil.
	mainPackage func(pkg string) error
}

// repoMainPackage checks a package directory of the repository on disk.
func repoMainPackage(pkg string) error {
	dir := filepath.Join(repoRoot, filepath.FromSlash(pkg))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, n), nil, parser.PackageClauseOnly)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
	}
	return fmt.Errorf("%s has no Go file of package main", dir)
}

func readDockerInputs() (dockerInputs, error) {
	var in dockerInputs
	for _, f := range []struct {
		name string
		dst  *string
	}{{"Dockerfile", &in.dockerfile}, {".dockerignore", &in.dockerignore}, {"go.mod", &in.gomod}} {
		b, err := os.ReadFile(filepath.Join(repoRoot, f.name))
		if err != nil {
			return in, err
		}
		*f.dst = string(b)
	}
	in.mainPackage = repoMainPackage
	return in, nil
}

// loadContract reads the repository's Dockerfile once, for the manifest tests.
var loadContract = sync.OnceValues(func() (*imageContract, error) {
	in, err := readDockerInputs()
	if err != nil {
		return nil, err
	}
	ic, fails := checkDockerfile(in)
	if ic == nil {
		return nil, fmt.Errorf("the Dockerfile yields no image contract: %s", strings.Join(fails, "; "))
	}
	return ic, nil
})

// requiredLabels are the OCI annotations the image must carry.
var requiredLabels = []string{
	"org.opencontainers.image.title",
	"org.opencontainers.image.description",
	"org.opencontainers.image.source",
	"org.opencontainers.image.licenses",
	"org.opencontainers.image.version",
	"org.opencontainers.image.revision",
}

// checkDockerfile checks the Dockerfile and returns the contract it makes
// with the manifests (nil when it cannot be worked out) and every failure.
func checkDockerfile(in dockerInputs) (*imageContract, []string) {
	var fails []string
	failf := func(format string, args ...any) { fails = append(fails, fmt.Sprintf("Dockerfile: "+format, args...)) }

	module, goVersion := "", ""
	for line := range strings.SplitSeq(in.gomod, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "module" {
			module = f[1]
		}
		if len(f) == 2 && f[0] == "go" {
			goVersion = f[1]
		}
	}
	if module == "" || goVersion == "" {
		return nil, []string{"go.mod: no module path or go version"}
	}
	goMinor := strings.Join(strings.SplitN(goVersion, ".", 3)[:2], ".")

	stages, err := parseDockerfile(in.dockerfile)
	if err != nil {
		return nil, []string{"Dockerfile: " + err.Error()}
	}
	final := stages[len(stages)-1]
	ic := &imageContract{binaries: map[string]string{}}

	// The build stage: golang of the go.mod's version, static, reproducible builds.
	built := map[string]string{} // output path -> package
	var builders []string
	for i, st := range stages[:len(stages)-1] {
		builds := goBuilds(st)
		if len(builds) == 0 {
			continue
		}
		builders = append(builders, st.name, strconv.Itoa(i))
		repo, tag, _ := splitImage(st.image)
		if repo != "golang" && repo != "docker.io/library/golang" {
			failf("line %d: the build stage is FROM %s; want golang:%s", st.line, st.image, goMinor)
		} else if tag != goMinor && !strings.HasPrefix(tag, goMinor+".") && !strings.HasPrefix(tag, goMinor+"-") {
			failf("line %d: the build stage is FROM %s; want Go %s, the version go.mod asks for", st.line, st.image, goMinor)
		}
		env := stageEnv(st)
		for _, b := range builds {
			where := fmt.Sprintf("line %d: go build -o %s %s", b.line, b.output, b.pkg)
			if b.output == "" || b.pkg == "" {
				failf("%s: want one package and an output file (-o)", where)
				continue
			}
			cgo, ok := b.env["CGO_ENABLED"]
			if !ok {
				cgo = env["CGO_ENABLED"]
			}
			if cgo != "0" {
				failf("%s: CGO_ENABLED is %q; want 0 for a static binary", where, cgo)
			}
			if !b.trimpath {
				failf("%s: no -trimpath", where)
			}
			if !strings.Contains(b.ldflags, "-s") || !strings.Contains(b.ldflags, "-w") {
				failf("%s: -ldflags %q; want -s -w", where, b.ldflags)
			}
			for _, target := range []string{"/go/pkg/mod", "/root/.cache/go-build"} {
				if !slices.ContainsFunc(b.mounts, func(m string) bool {
					return strings.Contains(m, "type=cache") && strings.Contains(m, "target="+target)
				}) {
					failf("%s: no cache mount for %s", where, target)
				}
			}
			if !strings.HasPrefix(b.pkg, "./") {
				failf("%s: build a package of this module by its relative path (./...)", where)
			} else if err := in.mainPackage(b.pkg); err != nil {
				failf("%s: %v", where, err)
			}
			built[b.output] = b.pkg
		}
	}
	if len(built) == 0 {
		failf("no go build in a stage before the last")
	}

	// The final stage: distroless static or scratch, the binaries, a
	// numeric non-root user, an exec-form entrypoint.
	if final.image != "scratch" && !strings.HasPrefix(final.image, "gcr.io/distroless/static") {
		failf("line %d: the final stage is FROM %s; want gcr.io/distroless/static-debian12:nonroot or scratch", final.line, final.image)
	}
	labels := map[string]string{}
	user := ""
	var entrypoint []string
	entrypointLine := 0
	for _, in := range final.instructions {
		switch in.cmd {
		case "RUN":
			failf("line %d: RUN in the final stage; it has no shell, build in the build stage", in.line)
		case "USER":
			user = in.args
		case "LABEL":
			for _, w := range shellWords(in.args) {
				k, v, _ := strings.Cut(w, "=")
				labels[k] = v
			}
		case "ENTRYPOINT":
			entrypointLine = in.line
			if err := json.Unmarshal([]byte(in.args), &entrypoint); err != nil || len(entrypoint) == 0 {
				failf("line %d: ENTRYPOINT %s: want the exec form, a JSON array (no shell in the image)", in.line, in.args)
				entrypoint = nil
			}
		case "COPY":
			words := strings.Fields(in.args)
			var from string
			var rest []string
			for _, w := range words {
				if v, ok := strings.CutPrefix(w, "--from="); ok {
					from = v
				} else if !strings.HasPrefix(w, "--") {
					rest = append(rest, w)
				}
			}
			if !slices.Contains(builders, from) || len(rest) < 2 {
				continue
			}
			srcs, dst := rest[:len(rest)-1], rest[len(rest)-1]
			for _, src := range srcs {
				pkg, ok := built[src]
				if !ok {
					failf("line %d: COPY %s: not a file the build stage builds", in.line, src)
					continue
				}
				installed := dst
				if strings.HasSuffix(dst, "/") || len(srcs) > 1 {
					installed = path.Join(dst, path.Base(src))
				}
				ic.binaries[installed] = pkg
			}
		}
	}
	for out, pkg := range built {
		if !slices.Contains(slices.Collect(maps.Values(ic.binaries)), pkg) {
			failf("%s (%s) is built but not copied into the final stage", out, pkg)
		}
	}
	if entrypointLine == 0 {
		failf("the final stage has no ENTRYPOINT")
	} else if entrypoint != nil {
		if _, ok := ic.binaries[entrypoint[0]]; !ok {
			failf("line %d: ENTRYPOINT runs %s, which is not a binary the image installs (%s)", entrypointLine, entrypoint[0], strings.Join(slices.Sorted(maps.Keys(ic.binaries)), ", "))
		}
		ic.entrypoint = entrypoint[0]
	}
	uidText, gidText, hasGID := strings.Cut(user, ":")
	uid, uerr := strconv.ParseInt(uidText, 10, 64)
	gid, gerr := strconv.ParseInt(gidText, 10, 64)
	switch {
	case user == "":
		failf("the final stage has no USER; want a numeric non-root user such as 65532:65532")
	case uerr != nil || (hasGID && gerr != nil):
		failf("USER %s: want numeric uid:gid, so that runAsNonRoot can verify it", user)
	case uid == 0:
		failf("USER %s: the image must not run as root", user)
	default:
		ic.uid, ic.gid = uid, uid
		if hasGID {
			ic.gid = gid
		}
	}

	// Labels, and the image name they give.
	for _, k := range requiredLabels {
		if strings.TrimSpace(labels[k]) == "" {
			failf("no LABEL %s", k)
		}
	}
	source := labels["org.opencontainers.image.source"]
	wantSource := "https://" + module
	if source != wantSource {
		failf("LABEL org.opencontainers.image.source=%q; want %q, the repository of module %s", source, wantSource, module)
	}
	if owner, ok := strings.CutPrefix(module, "github.com/"); ok {
		// GitHub's registry names an image after the repository its source
		// label points to.
		ic.repo = "ghcr.io/" + strings.ToLower(owner)
	} else {
		failf("module %s is not on GitHub: say where its image is published", module)
	}

	// The build context must hold what the build reads, and not .git.
	ignore := dockerignorePatterns(in.dockerignore)
	needed := []string{"go.mod", "go.sum"}
	for _, pkg := range slices.Sorted(maps.Values(built)) {
		p := strings.TrimPrefix(pkg, "./")
		needed = append(needed, p, p+"/main.go")
	}
	for _, p := range needed {
		if dockerignoreExcludes(ignore, p) {
			fails = append(fails, fmt.Sprintf(".dockerignore: excludes %s, which the build needs", p))
		}
	}
	if !dockerignoreExcludes(ignore, ".git/config") {
		fails = append(fails, ".dockerignore: does not exclude .git")
	}
	return ic, fails
}

// dockerignorePattern is one line of a .dockerignore.
type dockerignorePattern struct {
	re     *regexp.Regexp
	negate bool
}

// dockerignorePatterns reads a .dockerignore the way Docker does: one
// pattern a line, # comments, ! to re-include, ** for any number of
// directories, and a pattern that matches a directory matches what is in it.
func dockerignorePatterns(text string) []dockerignorePattern {
	var pats []dockerignorePattern
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := dockerignorePattern{}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			p.negate, line = true, rest
		}
		line = strings.TrimPrefix(path.Clean(line), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$") // a directory's pattern covers its contents
		p.re = regexp.MustCompile(re.String())
		pats = append(pats, p)
	}
	return pats
}

// dockerignoreExcludes reports whether the last pattern that matches file
// (a slash-separated path from the context root) excludes it.
func dockerignoreExcludes(pats []dockerignorePattern, file string) bool {
	excluded := false
	for _, p := range pats {
		if p.re.MatchString(file) {
			excluded = !p.negate
		}
	}
	return excluded
}
