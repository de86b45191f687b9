package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// goTool returns the path of a test tool that exists only as a Go module
// (an oracle, never a dependency of coffer): $env if set, else a build
// cached in the user cache dir (coffer-tools/NAME-VERSION, outside the
// repository, reused across runs and built by .ci/run beforehand), else it
// builds one with `go install -trimpath PKG@VERSION`. When the module
// cannot be built the test is skipped with the reason, or fails under
// COFFER_REQUIRE_EXTERNAL=1.
func goTool(t testing.TB, name, pkg, version, env string, timeout time.Duration) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	RequireExternal(t, err == nil, "no user cache dir to build "+name+" into")
	dir := filepath.Join(cache, "coffer-tools", name+"-"+version)
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t.Logf("building %s %s into %s (once)", name, version, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", pkg+"@"+version)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		RequireExternal(t, false, "cannot build "+name+" "+version+" from its module: "+err.Error()+"\n"+string(tail))
	}
	return bin
}
