package testutil

import (
	"testing"
	"time"
)

// CosignVersion is the cosign the interop tests build and run.
const CosignVersion = "v2.6.5"

// CosignV3Version is the cosign v3 (sigstore bundles by default) the
// bundle interop tests build and run.
const CosignV3Version = "v3.1.3"

// Cosign returns the path of the real cosign binary, a test oracle (never
// a dependency of coffer): $COFFER_COSIGN if set, else a build cached in
// the user cache dir (outside the repository, reused across runs), else it
// builds one with `go install -trimpath …/cmd/cosign@CosignVersion` (about
// 4 minutes cold on 2 cores). When the module cannot be fetched the test is
// skipped with the reason, or fails under COFFER_REQUIRE_EXTERNAL=1.
func Cosign(t testing.TB) string {
	t.Helper()
	return goTool(t, "cosign", "github.com/sigstore/cosign/v2/cmd/cosign", CosignVersion, "COFFER_COSIGN", 20*time.Minute)
}

// CosignV3 is Cosign for cosign v3 ($COFFER_COSIGN3, else built from
// …/cosign/v3/cmd/cosign@CosignV3Version into the same cache dir).
func CosignV3(t testing.TB) string {
	t.Helper()
	return goTool(t, "cosign", "github.com/sigstore/cosign/v3/cmd/cosign", CosignV3Version, "COFFER_COSIGN3", 20*time.Minute)
}
