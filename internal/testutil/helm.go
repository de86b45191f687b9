package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	if p := os.Getenv("COFFER_HELM"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	RequireExternal(t, err == nil, "no user cache dir to build helm into")
	dir := filepath.Join(cache, "coffer-tools", "helm-"+HelmVersion)
	bin := filepath.Join(dir, "helm")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	t.Logf("building helm %s into %s (once; several minutes)", HelmVersion, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "helm.sh/helm/v4/cmd/helm@"+HelmVersion)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		RequireExternal(t, false, "cannot build helm "+HelmVersion+" from its module: "+err.Error()+"\n"+string(tail))
	}
	return bin
}
