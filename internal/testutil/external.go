// Package testutil holds helpers shared by coffer's tests.
package testutil

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

// KernelDir returns the extracted Debian linux-image package coffer vm's
// guests boot ($COFFER_VM_KERNEL_DIR, else the user cache dir's
// coffer-tools/linux-image, which .ci/run fills); it skips (or fails
// under COFFER_REQUIRE_EXTERNAL=1) when there is none.
func KernelDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("COFFER_VM_KERNEL_DIR")
	if d == "" {
		cache, _ := os.UserCacheDir()
		d = filepath.Join(cache, "coffer-tools", "linux-image")
	}
	imgs, _ := filepath.Glob(filepath.Join(d, "boot", "vmlinuz-*"))
	RequireExternal(t, len(imgs) == 1, "no extracted linux-image package at "+d+" (set COFFER_VM_KERNEL_DIR, or run .ci/run, which downloads one)")
	return d
}

// WriteJSON writes v as JSON to path (0600): the CRI tests' pod and
// container configs for crictl.
func WriteJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
