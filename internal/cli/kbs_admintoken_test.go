package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/spec"
)

// Review 3: `kbs admin-token > a.tok` left a bearer token 0644. --out
// writes it 0600, refuses an existing file (so a typo cannot clobber the
// admin key) unless --force, and the token it writes works.
func TestKBSAdminTokenOut(t *testing.T) {
	b := kbstest.New(t)
	t.Setenv("COFFER_KBS_URL", b.URL)
	t.Setenv("COFFER_KBS_ADMIN_KEY", "")
	t.Setenv("COFFER_KBS_ADMIN_TOKEN", "")
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "a.tok")
	mint := func(extra ...string) (string, error) {
		return runCoffer(t, "", append([]string{"kbs", "admin-token", "--admin-key", b.AdminKeyFile, "--ttl", "5m", "--reusable"}, extra...)...)
	}
	out, err := mint("--out", tokFile)
	if err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(tokFile); st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
	if tok := strings.TrimSpace(string(first)); len(tok) < 40 || strings.Contains(out, tok) {
		t.Errorf("token file %q, output %q: want the token in the file only", first, out)
	}
	if _, err := runCoffer(t, "v", "kbs", "set-resource", "--admin-token", tokFile, "--path", "default/key/one", "--resource-file", "-"); err != nil {
		t.Fatalf("the written token does not work: %v", err)
	}
	// Without --force an existing file stays as it was: the token, or the
	// admin key named by mistake.
	keyBefore, _ := os.ReadFile(b.AdminKeyFile)
	for _, f := range []string{tokFile, b.AdminKeyFile} {
		if _, err := mint("--out", f); !errors.Is(err, spec.ErrExists) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("--out %s over an existing file: %v, want ErrExists naming --force", f, err)
		}
	}
	if now, _ := os.ReadFile(tokFile); string(now) != string(first) {
		t.Error("refused --out changed the token file")
	}
	if now, _ := os.ReadFile(b.AdminKeyFile); string(now) != string(keyBefore) {
		t.Fatal("refused --out changed the admin key")
	}
	// --force replaces, and the file is 0600 whatever it was.
	if err := os.Chmod(tokFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := mint("--out", tokFile, "--force", "--ttl", "6m"); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(tokFile)
	if st, _ := os.Stat(tokFile); st.Mode().Perm() != 0o600 || string(second) == string(first) {
		t.Errorf("after --force: mode %v, replaced %v; want 0600 and a new token", st.Mode().Perm(), string(second) != string(first))
	}
}
