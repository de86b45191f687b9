package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	return buildCosign(t, "COFFER_COSIGN", "github.com/sigstore/cosign/v2/cmd/cosign", CosignVersion)
}

// CosignV3 is Cosign for cosign v3 ($COFFER_COSIGN3, else built from
// …/cosign/v3/cmd/cosign@CosignV3Version into the same cache dir).
func CosignV3(t testing.TB) string {
	t.Helper()
	return buildCosign(t, "COFFER_COSIGN3", "github.com/sigstore/cosign/v3/cmd/cosign", CosignV3Version)
}

func buildCosign(t testing.TB, env, module, version string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	RequireExternal(t, err == nil, "no user cache dir to build cosign into")
	dir := filepath.Join(cache, "coffer-tools", "cosign-"+version)
	bin := filepath.Join(dir, "cosign")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	t.Logf("building cosign %s into %s (once; several minutes)", version, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", module+"@"+version)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		RequireExternal(t, false, "cannot build cosign "+version+" from its module: "+err.Error()+"\n"+string(tail))
	}
	return bin
}
