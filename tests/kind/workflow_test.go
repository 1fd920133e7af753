package kind

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The part of the GitHub Actions workflow schema .github/workflows/kind.yml uses. Decoding is
// strict, so a misspelt key (`step:`, `run-on:`, `with:` under the job) fails here.
type workflow struct {
	Name        string            `json:"name"`
	On          map[string]any    `json:"on"`
	Permissions map[string]string `json:"permissions"`
	Concurrency struct {
		Group            string `json:"group"`
		CancelInProgress bool   `json:"cancel-in-progress"`
	} `json:"concurrency"`
	Jobs map[string]job `json:"jobs"`
}

type job struct {
	RunsOn         string            `json:"runs-on"`
	TimeoutMinutes int               `json:"timeout-minutes"`
	Env            map[string]string `json:"env"`
	Steps          []step            `json:"steps"`
}

type step struct {
	Name             string            `json:"name"`
	Uses             string            `json:"uses"`
	With             map[string]any    `json:"with"`
	Run              string            `json:"run"`
	If               string            `json:"if"`
	Env              map[string]string `json:"env"`
	WorkingDirectory string            `json:"working-directory"`
}

func TestWorkflow(t *testing.T) {
	var w workflow
	if err := yaml.UnmarshalStrict(readFile(t, ".github/workflows/kind.yml"), &w); err != nil {
		t.Fatalf(".github/workflows/kind.yml: %v", err)
	}
	if len(w.On) == 0 {
		t.Error("no triggers under \"on\"")
	}
	j, ok := w.Jobs["cluster-tests"]
	if !ok || len(j.Steps) == 0 {
		t.Fatalf("no job cluster-tests with steps: %v", w.Jobs)
	}
	if j.TimeoutMinutes <= 0 || j.TimeoutMinutes > 90 {
		t.Errorf("timeout-minutes = %d, want 1..90", j.TimeoutMinutes)
	}
	var runs []string
	for i, s := range j.Steps {
		if s.Name == "" {
			t.Errorf("step %d has no name", i)
		}
		if (s.Uses == "") == (s.Run == "") {
			t.Errorf("step %q: exactly one of uses and run", s.Name)
		}
		if s.Uses != "" && !regexp.MustCompile(`^[\w.-]+/[\w.-]+@(v\d+|stable)$`).MatchString(s.Uses) {
			t.Errorf("step %q: uses %q is not owner/action@vN (or @stable)", s.Name, s.Uses)
		}
		runs = append(runs, s.Run)
	}
	all := strings.Join(runs, "\n")

	// kind: the version tests/kind/go.mod requires, and this repository's config.
	m := regexp.MustCompile(`(?m)^\s*sigs\.k8s\.io/kind (v\S+)`).FindSubmatch(readFile(t, "tests/kind/go.mod"))
	if m == nil {
		t.Fatal("tests/kind/go.mod does not require sigs.k8s.io/kind")
	}
	if got := j.Env["KIND_VERSION"]; got != string(m[1]) {
		t.Errorf("KIND_VERSION = %q, tests/kind/go.mod requires %s", got, m[1])
	}
	for _, want := range []string{
		"kind create cluster --config kind-config.yaml",
		// The tools built the same way, the images built by the same scripts, the same static
		// build.
		"tests/cluster/build-tools.sh --tests",
		"tests/cluster/build-images.sh",
		"tests/cluster/janitor-image.sh",
		"kind load image-archive",
		"cargo dist --locked", // the static buildr (.cargo/config.toml), as tests/common/cluster.rs expects
		"helm install buildr charts/buildr",
		"kind delete cluster --name buildr",
	} {
		if !strings.Contains(strings.ReplaceAll(all, `"$helm"`, "helm"), want) {
			t.Errorf("no step runs %q", want)
		}
	}
	// The tests: exactly what tests/run-all.sh hands to with-cluster.sh, but for those that
	// need root, which a step of their own runs as root.
	runAll := string(readFile(t, "tests/run-all.sh"))
	cm := regexp.MustCompile(`with-cluster\.sh bash -c '([^']+)'`).FindStringSubmatch(runAll)
	if cm == nil {
		t.Fatal("tests/run-all.sh does not run with-cluster.sh bash -c '...'")
	}
	wm := regexp.MustCompile(`bash -c '` + regexp.QuoteMeta(cm[1]) + `((?: --skip \S+)*)'`).FindStringSubmatch(all)
	if wm == nil {
		t.Errorf("the workflow does not run the tests as tests/run-all.sh does: bash -c '%s'", cm[1])
	} else {
		for _, skipped := range strings.Fields(strings.ReplaceAll(wm[1], "--skip", "")) {
			if !runsElsewhere(t, all, skipped) {
				t.Errorf("the workflow skips %s and no other step runs them", skipped)
			}
		}
	}
	// The cluster is named as kind-config.yaml names it.
	c, err := decodeCluster(readFile(t, "kind-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "buildr" {
		t.Errorf("kind-config.yaml names the cluster %q; the workflow uses --name buildr", c.Name)
	}
}

func TestWorkflowDecoderRejectsUnknownKeys(t *testing.T) {
	bad := strings.Replace(string(readFile(t, ".github/workflows/kind.yml")), "runs-on:", "run-on:", 1)
	var w workflow
	if err := yaml.UnmarshalStrict([]byte(bad), &w); err == nil || !strings.Contains(err.Error(), "run-on") {
		t.Fatalf("a misspelt key decoded without the error naming it: %v", err)
	}
}

// runsElsewhere says whether a step runs the tests of module PATH (`name::`) of some
// tests/FILE.rs with `cargo test ... --test FILE -- --include-ignored`.
func runsElsewhere(t *testing.T, steps, path string) bool {
	module := strings.TrimSuffix(path, "::")
	for _, m := range regexp.MustCompile(`cargo test [^\n]*--test (\S+) -- --include-ignored`).FindAllStringSubmatch(steps, -1) {
		source := string(readFile(t, "tests/"+m[1]+".rs"))
		if regexp.MustCompile(`(?m)^\s*(pub )?mod ` + regexp.QuoteMeta(module) + `\b`).MatchString(source) {
			return true
		}
	}
	return false
}

// The tools the tests run, one list: every tool("NAME") of the tests is in
// tests/cluster/test-tools.txt, each `build` one there has a recipe in build-tools.sh, and the
// workflow builds them all (and caches them by their go.sum); each `cluster` one the workflow
// uses itself before the tests, so that a runner without it fails at once. The images the tests
// run in (tests/common/cluster.rs) are built by build-images.sh, whose images the workflow
// loads into kind.
func TestWorkflowBuildsWhatTheTestsRun(t *testing.T) {
	listed := map[string]string{}
	for i, line := range strings.Split(string(readFile(t, "tests/cluster/test-tools.txt")), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) != 2 || (fields[1] != "build" && fields[1] != "cluster") {
			t.Fatalf("tests/cluster/test-tools.txt:%d: want NAME build|cluster, got %q", i+1, line)
		}
		listed[fields[0]] = fields[1]
	}

	asked := map[string][]string{}
	for _, pattern := range []string{"tests/*.rs", "tests/common/*.rs"} {
		files, err := filepath.Glob(filepath.Join(repoRoot(t), pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			rel, _ := filepath.Rel(repoRoot(t), file)
			for _, m := range regexp.MustCompile(`\btool\("([^"]+)"\)`).FindAllStringSubmatch(string(readFile(t, rel)), -1) {
				asked[m[1]] = append(asked[m[1]], rel)
			}
		}
	}
	if len(asked) == 0 {
		t.Fatal("no tool(\"...\") found in tests/: the scan is broken")
	}
	for name, files := range asked {
		if listed[name] == "" {
			t.Errorf("%s runs tool(%q), which tests/cluster/test-tools.txt does not list", strings.Join(files, ", "), name)
		}
	}

	var w workflow
	if err := yaml.UnmarshalStrict(readFile(t, ".github/workflows/kind.yml"), &w); err != nil {
		t.Fatal(err)
	}
	j := w.Jobs["cluster-tests"]
	var before []string // the steps before the tests
	var cacheKey string
	for _, s := range j.Steps {
		if strings.Contains(s.Run, "cargo test") {
			break
		}
		before = append(before, s.Run)
		if key, ok := s.With["key"].(string); ok && s.Uses != "" && strings.HasPrefix(s.Uses, "actions/cache@") {
			cacheKey = key
		}
	}
	steps := strings.Join(before, "\n")
	recipes := string(readFile(t, "tests/cluster/build-tools.sh"))
	for name, how := range listed {
		switch how {
		case "build":
			if _, err := os.Stat(filepath.Join(repoRoot(t), "tests/cluster/tools", name, "go.mod")); err != nil {
				t.Errorf("test-tools.txt builds %s, but tests/cluster/tools/%s/go.mod: %v", name, name, err)
			}
			if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\)`).MatchString(recipes) {
				t.Errorf("test-tools.txt builds %s, but build-tools.sh has no recipe for it", name)
			}
			if !strings.Contains(cacheKey, "tests/cluster/tools/*/go.sum") && !strings.Contains(cacheKey, "tests/cluster/tools/"+name+"/go.sum") {
				t.Errorf("the workflow's cache key (%s) does not cover %s's go.sum", cacheKey, name)
			}
		case "cluster":
			if !regexp.MustCompile(`(?m)(^|[\s"])` + regexp.QuoteMeta(name) + `\s`).MatchString(steps) {
				t.Errorf("no step before the tests runs %s, which the tests take from the runner", name)
			}
		}
	}
	if !strings.Contains(steps, "tests/cluster/build-tools.sh --tests") {
		t.Error("the workflow does not build the tools of tests/cluster/test-tools.txt before the tests")
	}
	if !strings.Contains(string(readFile(t, "tests/run-all.sh")), "tests/cluster/build-tools.sh --tests") {
		t.Error("tests/run-all.sh does not build the tools of tests/cluster/test-tools.txt")
	}

	// The images the tests run in.
	images := regexp.MustCompile(`"(buildr\.local/[^"]+)"`).FindAllStringSubmatch(string(readFile(t, "tests/common/cluster.rs")), -1)
	if len(images) == 0 {
		t.Fatal("no buildr.local image in tests/common/cluster.rs: the scan is broken")
	}
	built := string(readFile(t, "tests/cluster/build-images.sh"))
	for _, m := range images {
		if !strings.Contains(built, m[1]) {
			t.Errorf("tests/common/cluster.rs runs pods of %s, which tests/cluster/build-images.sh does not build", m[1])
		}
	}
	if !strings.Contains(steps, "tests/cluster/build-images.sh") || !strings.Contains(steps, `images/*.tar`) {
		t.Error("the workflow does not load every image build-images.sh builds into kind")
	}
}
