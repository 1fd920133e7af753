// Package kind checks kind-config.yaml and the hosted-CI workflow that uses it with real
// parsers: the config is decoded strictly into kind's own v1alpha4.Cluster type (an unknown or
// misspelt field fails, as `kind create cluster` would), and the workflow into the subset of
// the GitHub Actions schema it uses.
package kind

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// repoRoot is two levels up from tests/kind.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return data
}

// decodeCluster decodes like kind does (sigs.k8s.io/yaml, strict) and applies kind's defaults.
func decodeCluster(data []byte) (*v1alpha4.Cluster, error) {
	var c v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, err
	}
	v1alpha4.SetDefaultsCluster(&c)
	return &c, nil
}

// pinnedMinor is the Kubernetes minor ("1.34") that tests/cluster/go.mod pins.
func pinnedMinor(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes v(\d+\.\d+)\.\d+`).FindSubmatch(readFile(t, "tests/cluster/go.mod"))
	if m == nil {
		t.Fatal("tests/cluster/go.mod does not require k8s.io/kubernetes")
	}
	return string(m[1])
}

func TestKindConfig(t *testing.T) {
	c, err := decodeCluster(readFile(t, "kind-config.yaml"))
	if err != nil {
		t.Fatalf("kind-config.yaml does not decode into kind's v1alpha4.Cluster: %v", err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		t.Errorf("kind/apiVersion = %q/%q, want Cluster/kind.x-k8s.io/v1alpha4", c.Kind, c.APIVersion)
	}
	var roles []string
	for _, n := range c.Nodes {
		roles = append(roles, string(n.Role))
	}
	if strings.Join(roles, ",") != "control-plane,worker" {
		t.Errorf("node roles = %v, want one control-plane and one worker", roles)
	}
	minor := pinnedMinor(t)
	image := regexp.MustCompile(`^kindest/node:v` + regexp.QuoteMeta(minor) + `\.\d+@sha256:[0-9a-f]{64}$`)
	for i, n := range c.Nodes {
		if !image.MatchString(n.Image) {
			t.Errorf("node %d image %q: want kindest/node:v%s.N pinned by digest (the minor tests/cluster pins)", i, n.Image, minor)
		}
	}
	if c.Networking.DisableDefaultCNI {
		t.Error("disableDefaultCNI is true: kindnet (which enforces NetworkPolicy) would be missing")
	}
	if c.Networking.IPFamily != v1alpha4.IPv4Family {
		t.Errorf("ipFamily = %q, want ipv4 (what tests/cluster runs)", c.Networking.IPFamily)
	}
}

// The decoder really is strict: a misspelt field is an error, not silently dropped.
func TestKindConfigDecoderRejectsUnknownFields(t *testing.T) {
	good := readFile(t, "kind-config.yaml")
	bad := bytes.Replace(good, []byte("disableDefaultCNI:"), []byte("disableDefualtCNI:"), 1)
	if bytes.Equal(good, bad) {
		t.Fatal("kind-config.yaml has no disableDefaultCNI line to misspell")
	}
	if _, err := decodeCluster(bad); err == nil || !strings.Contains(err.Error(), "disableDefualtCNI") {
		t.Fatalf("a misspelt field decoded without the error naming it: %v", err)
	}
}
