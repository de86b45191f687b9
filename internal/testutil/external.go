// Package testutil holds helpers shared by coffer's tests.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequireTool returns the path of an external program the test needs. When it
// is absent the test is skipped with a clear message, or fails when
// COFFER_REQUIRE_EXTERNAL=1 (as in CI).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("COFFER_REQUIRE_EXTERNAL") == "1" {
		t.Fatalf("external tool %q is required (COFFER_REQUIRE_EXTERNAL=1) but not found in PATH", name)
	}
	t.Skipf("skipping: external tool %q not found in PATH (install it, e.g. apt-get install %s)", name, name)
	return ""
}

// RequireExternal skips (or fails under COFFER_REQUIRE_EXTERNAL=1) with the
// given reason when cond is false.
func RequireExternal(t testing.TB, cond bool, why string) {
	t.Helper()
	if cond {
		return
	}
	if os.Getenv("COFFER_REQUIRE_EXTERNAL") == "1" {
		t.Fatalf("required external dependency missing (COFFER_REQUIRE_EXTERNAL=1): %s", why)
	}
	t.Skipf("skipping: %s", why)
}
