package testutil

import (
	"testing"
	"time"
)

// CrictlVersion is the crictl the CRI tests build and run.
const CrictlVersion = "v1.37.0"

// Crictl returns the path of crictl, the CRI client that talks to
// containerd as kubelet does (a test tool, never a dependency of coffer):
// $COFFER_CRICTL if set, else a build cached in the user cache dir beside
// cosign's, else it builds one with `go install -trimpath
// sigs.k8s.io/cri-tools/cmd/crictl@CrictlVersion` (~1 min cold). When the
// module cannot be fetched the test is skipped with the reason, or fails
// under COFFER_REQUIRE_EXTERNAL=1.
func Crictl(t testing.TB) string {
	t.Helper()
	return goTool(t, "crictl", "sigs.k8s.io/cri-tools/cmd/crictl", CrictlVersion, "COFFER_CRICTL", 10*time.Minute)
}
