package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	if p := os.Getenv("COFFER_CRICTL"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	RequireExternal(t, err == nil, "no user cache dir to build crictl into")
	dir := filepath.Join(cache, "coffer-tools", "crictl-"+CrictlVersion)
	bin := filepath.Join(dir, "crictl")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t.Logf("building crictl %s into %s (once)", CrictlVersion, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "sigs.k8s.io/cri-tools/cmd/crictl@"+CrictlVersion)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		RequireExternal(t, false, "cannot build crictl "+CrictlVersion+" from its module: "+err.Error()+"\n"+string(tail))
	}
	return bin
}
