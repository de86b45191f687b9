package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/spec"
)

// Issue 12 finding 6: a second `encrypt --kbs --key-id X` replaced the
// broker's KEK and every image encrypted before became undecryptable.
// Now the registration is create-only; --replace-key says what it breaks.
func TestEncryptKBSNeverReplacesAKeySilently(t *testing.T) {
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.key")
	mustCoffer(t, "kbs", "keygen-admin", "--out", admin)
	kbs := startBroker(t, admin+".pub")
	mustCoffer(t, "kbs", "set-resource-policy", "--allow-all", "--url", kbs, "--admin-key", admin)
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	src := "oci:" + filepath.Join(dir, "app") + ":v1"
	first := "oci:" + filepath.Join(dir, "enc1")
	encrypt := func(dst string, extra ...string) error {
		_, _, err := coffer(t, append([]string{"encrypt", "--kbs", kbs, "--admin-key", admin, "--key-id", "default/image_key/app"}, append(extra, src, dst)...)...)
		return err
	}
	pull := func(img, name string) error {
		_, _, err := coffer(t, "pull", "--kbs", kbs, "--tee", "sample", img, filepath.Join(dir, name))
		return err
	}
	if err := encrypt(first); err != nil {
		t.Fatal(err)
	}

	second := filepath.Join(dir, "enc2")
	err := encrypt("oci:" + second)
	if !errors.Is(err, spec.ErrExists) || !strings.Contains(err.Error(), "already holds a key at default/image_key/app") ||
		!strings.Contains(err.Error(), "--replace-key") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("second encrypt under the same key id: %v", err)
	}
	if _, serr := os.Stat(second); serr == nil {
		t.Error("refused encrypt wrote its destination")
	}
	// The first image still opens.
	if err := pull(first, "rootfs1"); err != nil {
		t.Fatalf("first image after the refused encrypt: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "rootfs1", "secret")); strings.TrimSpace(string(got)) != demo.Secret {
		t.Fatalf("rootfs1/secret = %q", got)
	}

	// Asked for explicitly, the key is replaced: the new image opens, the old one no longer does.
	third := "oci:" + filepath.Join(dir, "enc3")
	if err := encrypt(third, "--replace-key"); err != nil {
		t.Fatal(err)
	}
	if err := pull(third, "rootfs3"); err != nil {
		t.Fatalf("image under the replaced key: %v", err)
	}
	if err := pull(first, "rootfs1b"); err == nil {
		t.Fatal("an image under the old key still opened after --replace-key")
	}
}
