package cli

import (
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/spec"
)

// The README's walkthrough: encrypt to a registry pins by default; pull and
// verify enforce the pin; an image replaced in the registry is refused.
func TestEncryptPinsPullEnforces(t *testing.T) {
	b := kbstest.New(t)
	b.AllowAll(t)
	b.AffirmSample(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	src, dst := "oci:"+filepath.Join(dir, "app")+":v1", "docker://"+host+"/app:enc"
	out, err := runCoffer(t, "", "encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app", src, dst)
	if err != nil || !strings.Contains(out, "pinned docker://"+host+"/app:enc at sha256:") {
		t.Fatalf("encrypt: %v\n%s", err, out)
	}
	if out, err := runCoffer(t, "", "verify", "--kbs", b.URL, "--tee", "sample", dst); err != nil || !strings.Contains(out, "digest pinned in the broker at kbs:///default/image_pin/") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if out, err := runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", dst, filepath.Join(dir, "rootfs")); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	// The registry serves another image of the owner's (unpinned) instead.
	if _, err := runCoffer(t, "", "encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/other", "--pin=false", src, "docker://"+host+"/other:enc"); err != nil {
		t.Fatal(err)
	}
	other, err := remote.Image(mustRef(t, host+"/other:enc"))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, host+"/app:enc"), other); err != nil {
		t.Fatal(err)
	}
	out, err = runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", dst, filepath.Join(dir, "rootfs2"))
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "changed since it was pinned") {
		t.Errorf("pull of the replaced image: %v\n%s", err, out)
	}
	if _, err := runCoffer(t, "", "verify", "--kbs", b.URL, "--tee", "sample", dst); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("verify of the replaced image: %v", err)
	}
	// Unpinned: the other image pulls with one warning, and not at all under --require-signature.
	out, err = runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "docker://"+host+"/other:enc", filepath.Join(dir, "rootfs3"))
	if err != nil || strings.Count(out, "integrity is not verified") != 1 {
		t.Errorf("unpinned pull: %v, want one warning in\n%s", err, out)
	}
	_, err = runCoffer(t, "", "pull", "--require-signature", "--kbs", b.URL, "--tee", "sample", "docker://"+host+"/other:enc", filepath.Join(dir, "rootfs4"))
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("unpinned pull under --require-signature: %v, want ErrPolicyDenied", err)
	}
	if _, err := runCoffer(t, "", "encrypt", "--pin", "--recipient", "jwe:x", src, dst); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--pin needs --kbs") {
		t.Errorf("--pin without --kbs: %v", err)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
