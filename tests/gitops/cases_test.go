// Package gitops checks the ModelDeployment health check of gitops/argocd under gopher-lua, as Argo CD runs
// it, and kstatus' verdict on the same objects (what Flux's kustomize-controller and helm-controller wait on).
package gitops

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The tree in Argo CD's resource_customizations/<group>/<Kind>/ layout; MODELDEPLOY_GITOPS_CUSTOMIZATIONS points at
// another one (tests/cluster/test_gitops_status.py: the same script on objects it has just captured).
func customizations(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("MODELDEPLOY_GITOPS_CUSTOMIZATIONS"); dir != "" {
		return dir
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "gitops", "argocd", "resource_customizations"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func modelDeploymentDir(t *testing.T) string {
	return filepath.Join(customizations(t), "modeldeploy.io", "ModelDeployment")
}

// readYAML reads a YAML file into `into` through sigs.k8s.io/yaml, as Argo CD's own test harness does (numbers
// become float64, as JSON decodes them).
func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readObject reads a manifest as Argo CD's test harness does: plain JSON decoding, numbers as float64 (the
// controller has int64 where these are float64; both are Lua numbers).
func readObject(t *testing.T, path string) map[string]any {
	t.Helper()
	object := map[string]any{}
	readYAML(t, path, &object)
	if len(object) == 0 {
		t.Fatalf("%s: empty", path)
	}
	return object
}

// readUnstructured reads a manifest as client-go decodes one, whole numbers as int64: kstatus reads
// metadata.generation and status.observedGeneration as int64 and refuses a float64.
func readUnstructured(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	encoded, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(encoded); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return object
}
