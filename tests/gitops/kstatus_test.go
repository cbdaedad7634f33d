package gitops

import (
	"path/filepath"
	"testing"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type kstatusTests struct {
	Tests []struct {
		InputPath string `json:"inputPath"`
		Status    string `json:"status"`
	} `json:"tests"`
}

// kstatus_test.yaml: what status.Compute must say of each object of the ModelDeployment's testdata.
func TestKstatus(t *testing.T) {
	var cases kstatusTests
	readYAML(t, "kstatus_test.yaml", &cases)
	if len(cases.Tests) == 0 {
		t.Fatal("kstatus_test.yaml lists no tests")
	}
	dir := modelDeploymentDir(t)
	for _, test := range cases.Tests {
		t.Run(test.InputPath, func(t *testing.T) {
			result, err := status.Compute(readUnstructured(t, filepath.Join(dir, test.InputPath)))
			if err != nil {
				t.Fatal(err)
			}
			if string(result.Status) != test.Status {
				t.Errorf("status.Compute: %s (%q), want %s", result.Status, result.Message, test.Status)
			}
		})
	}
}
