package kind

import (
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
		// Helm built the same way, the images built by the same scripts, the same static build.
		"tests/cluster/build-tools.sh helm",
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
	// The tests: exactly what tests/run-all.sh hands to with-cluster.sh.
	runAll := string(readFile(t, "tests/run-all.sh"))
	cm := regexp.MustCompile(`with-cluster\.sh (bash -c '[^']+')`).FindStringSubmatch(runAll)
	if cm == nil {
		t.Fatal("tests/run-all.sh does not run with-cluster.sh bash -c '...'")
	}
	if !strings.Contains(all, cm[1]) {
		t.Errorf("the workflow does not run the tests as tests/run-all.sh does: %s", cm[1])
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
