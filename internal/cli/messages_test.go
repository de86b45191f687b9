package cli

import (
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/spec"
)

// rekey says it breaks a digest pin, and the pull refusal says how to
// re-pin; verify without --kbs says the pin was not checked.
func TestRekeyRepinMessages(t *testing.T) {
	b := kbstest.New(t)
	b.AllowAll(t)
	b.AffirmSample(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	alice, alicePub := writeKeyPair(t, dir, "alice")
	_, bobPub := writeKeyPair(t, dir, "bob")
	dst := "docker://" + strings.TrimPrefix(srv.URL, "http://") + "/app:enc"
	if out, err := runCoffer(t, "", "encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app",
		"--recipient", "jwe:"+alicePub, "oci:"+filepath.Join(dir, "app")+":v1", dst); err != nil {
		t.Fatalf("encrypt: %v\n%s", err, out)
	}
	_, stderr, err := runCofferSplit(t, nil, "rekey", "--key", alice, "--recipient", "jwe:"+bobPub, dst, dst)
	if err != nil || !strings.Contains(stderr, "re-pin it (coffer kbs pin") {
		t.Fatalf("rekey: %v, stderr %q: want the re-pin note", err, stderr)
	}
	_, err = runCoffer(t, "", "pull", "--key", alice, "--kbs", b.URL, "--tee", "sample", dst, filepath.Join(dir, "rootfs"))
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "the owner re-pins: coffer kbs pin --digest sha256:") {
		t.Errorf("pull of the rekeyed image: %v, want a refusal saying how to re-pin", err)
	}
	_, err = runCoffer(t, "", "verify", dst)
	if !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "without --kbs the broker's digest pin is not checked") {
		t.Errorf("verify without --kbs: %v", err)
	}
}
