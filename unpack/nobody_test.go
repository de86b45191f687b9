package unpack

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// TestAsNobody re-runs the unprivileged-relevant tests of this binary as
// uid/gid 65534, where directory modes, chown and mknod really stop us.
func TestAsNobody(t *testing.T) {
	if os.Getenv("UNPACK_AS_NOBODY") == "1" {
		t.Skip("already running as nobody")
	}
	testutil.RequireExternal(t, os.Geteuid() == 0, "needs root to switch to nobody")
	setpriv := testutil.RequireTool(t, "setpriv")
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "unpack.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, 0o1777)
	tests := "^(TestReadOnlyDirsUnprivileged|TestDeviceFilesUnprivileged|TestDeviceFilesRoot|TestOwnershipRoot|" +
		"TestApplyBasicEntries|TestWhiteouts|TestOpaqueDir|TestHardLinks|TestHardLinkRejected|TestSymlinkEscape|" +
		"TestDotDotNames|TestDiffIDMismatch|TestContextCancellation|TestSparseFile|FuzzApplyLayer)$"
	cmd := exec.CommandContext(t.Context(), setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run", tests, "-test.count=1", "-test.v")
	// Without root on purpose: the root-only tests must skip there, so the
	// child runs without COFFER_REQUIRE_EXTERNAL (which turns skips into failures).
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "COFFER_REQUIRE_EXTERNAL=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "TMPDIR="+tmp, "UNPACK_AS_NOBODY=1")
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tests as nobody failed: %v\n%s", err, out)
	}
	for _, want := range []string{"--- PASS: TestReadOnlyDirsUnprivileged", "--- SKIP: TestOwnershipRoot", "--- PASS: TestSymlinkEscape"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
