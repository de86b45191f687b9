package testutil

import (
	"testing"
	"time"
)

// HelmVersion is the helm the chart tests build and run.
const HelmVersion = "v4.3.2"

// Helm returns the path of helm, the renderer and linter of the broker's
// chart (deploy/helm; a test tool, never a dependency of coffer): $COFFER_HELM
// if set, else a build cached in the user cache dir beside cosign's and
// crictl's, else it builds one with `go install -trimpath
// helm.sh/helm/v4/cmd/helm@HelmVersion` (several minutes cold on 2 cores).
// When the module cannot be fetched the test is skipped with the reason, or
// fails under COFFER_REQUIRE_EXTERNAL=1.
func Helm(t testing.TB) string {
	t.Helper()
	return goTool(t, "helm", "helm.sh/helm/v4/cmd/helm", HelmVersion, "COFFER_HELM", 20*time.Minute)
}
