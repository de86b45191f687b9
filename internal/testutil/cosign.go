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

// Cosign returns the path of the real cosign binary, a test oracle (never
// a dependency of coffer): $COFFER_COSIGN if set, else a build cached in
// the user cache dir (outside the repository, reused across runs), else it
// builds one with `go install -trimpath …/cmd/cosign@CosignVersion` (about
// 4 minutes cold on 2 cores). When the module cannot be fetched the test is
// skipped with the reason, or fails under COFFER_REQUIRE_EXTERNAL=1.
func Cosign(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("COFFER_COSIGN"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	RequireExternal(t, err == nil, "no user cache dir to build cosign into")
	dir := filepath.Join(cache, "coffer-tools", "cosign-"+CosignVersion)
	bin := filepath.Join(dir, "cosign")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	t.Logf("building cosign %s into %s (once; several minutes)", CosignVersion, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "github.com/sigstore/cosign/v2/cmd/cosign@"+CosignVersion)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		RequireExternal(t, false, "cannot build cosign "+CosignVersion+" from its module: "+err.Error()+"\n"+string(tail))
	}
	return bin
}
