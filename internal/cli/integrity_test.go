package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
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
	// The owner re-pins on purpose (kbs pin): only with the digest it holds.
	od, _ := other.Digest()
	admin := []string{"kbs", "pin", "--url", b.URL, "--admin-key", b.AdminKeyFile}
	if _, err := runCoffer(t, "", append(admin, "--digest", "sha256:"+strings.Repeat("0", 64), dst)...); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("kbs pin with a digest the image does not hold: %v, want ErrIntegrity", err)
	}
	if out, err := runCoffer(t, "", append(admin, "--digest", od.String(), dst)...); err != nil || !strings.Contains(out, od.String()) {
		t.Fatalf("kbs pin: %v\n%s", err, out)
	}
	if out, err := runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", dst, filepath.Join(dir, "rootfs-repinned")); err != nil {
		t.Errorf("pull after re-pinning: %v\n%s", err, out)
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

// coffer sign, then verify and pull under a sigstoreSigned policy, the
// policy served by the broker (kbs:///…) and read after attestation.
func TestSignVerifyPullPolicy(t *testing.T) {
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
	dst := "docker://" + host + "/team/app:enc"
	if _, err := runCoffer(t, "", "encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app", "--pin=false",
		"oci:"+filepath.Join(dir, "app")+":v1", dst); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COSIGN_PASSWORD", "coffer-test")
	key := filepath.Join("..", "..", "keywrap", "keys", "testdata", "cosign", "cosign.key")
	pub, err := os.ReadFile(filepath.Join("..", "..", "keywrap", "keys", "testdata", "cosign", "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCoffer(t, "", "sign", "--key", key, dst)
	if err != nil || !strings.Contains(out, "as "+host+"/team/app:enc") {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	policy := fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [{"type": "sigstoreSigned", "keyData": %q}]}}}`,
		host+"/team", base64.StdEncoding.EncodeToString(pub))
	pf := filepath.Join(dir, "policy.json")
	os.WriteFile(pf, []byte(policy), 0o644)
	if out, err := runCoffer(t, "", "verify", "--policy", pf, dst); err != nil || !strings.Contains(out, "sigstoreSigned signature") {
		t.Fatalf("verify --policy: %v\n%s", err, out)
	}
	b.SetResource(t, "default/security-policy/app", []byte(policy))
	out, err = runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "--require-signature", "--policy", "kbs:///default/security-policy/app", dst, filepath.Join(dir, "rootfs"))
	if err != nil || strings.Contains(out, "not verified") {
		t.Fatalf("pull --policy kbs:///…: %v\n%s", err, out)
	}
	// Replaced in the registry: refused by both, nothing unpacked.
	other := "docker://" + host + "/team/other:enc"
	if _, err := runCoffer(t, "", "encrypt", "--recipient", "jwe:"+writePub(t, dir), "oci:"+filepath.Join(dir, "app")+":v1", other); err != nil {
		t.Fatal(err)
	}
	oimg, _ := remote.Image(mustRef(t, host+"/team/other:enc"))
	if err := remote.Write(mustRef(t, host+"/team/app:enc"), oimg); err != nil {
		t.Fatal(err)
	}
	if _, err := runCoffer(t, "", "verify", "--policy", pf, dst); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("verify of the replaced image: %v, want ErrPolicyDenied", err)
	}
	_, err = runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "--policy", "kbs:///default/security-policy/app", dst, filepath.Join(dir, "rootfs2"))
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("pull of the replaced image: %v, want ErrPolicyDenied", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rootfs2")); !os.IsNotExist(err) {
		t.Errorf("refused pull left rootfs2: %v", err)
	}
	if _, err := runCoffer(t, "", "verify", "--policy", "kbs:///default/security-policy/app", dst); err == nil || !strings.Contains(err.Error(), "pass --kbs") {
		t.Errorf("kbs policy without --kbs: %v", err)
	}
}

func writePub(t *testing.T, dir string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	p := filepath.Join(dir, "r.pub.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	return p
}

// coffer sign --bundle (cosign v3's format, through the referrers tag
// fallback: this registry has no referrers API), then verify and pull
// under the same sigstoreSigned policy; a replaced image is refused.
func TestSignBundleVerifyPullPolicy(t *testing.T) {
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
	dst := "docker://" + host + "/team/app:enc"
	if _, err := runCoffer(t, "", "encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app", "--pin=false",
		"oci:"+filepath.Join(dir, "app")+":v1", dst); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COSIGN_PASSWORD", "coffer-test")
	key := filepath.Join("..", "..", "keywrap", "keys", "testdata", "cosign", "cosign.key")
	pub, err := os.ReadFile(filepath.Join("..", "..", "keywrap", "keys", "testdata", "cosign", "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runCoffer(t, "", "sign", "--bundle", "--key", key, "oci:"+filepath.Join(dir, "app")+":v1"); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("sign --bundle of an OCI layout: %v, want unsupported\n%s", err, out)
	}
	out, err := runCoffer(t, "", "sign", "--bundle", "--key", key, dst)
	if err != nil || !strings.Contains(out, "as "+host+"/team/app:enc") {
		t.Fatalf("sign --bundle: %v\n%s", err, out)
	}
	pf := filepath.Join(dir, "policy.json")
	os.WriteFile(pf, []byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [{"type": "sigstoreSigned", "keyData": %q}]}}}`,
		host+"/team", base64.StdEncoding.EncodeToString(pub))), 0o644)
	if out, err := runCoffer(t, "", "verify", "--policy", pf, dst); err != nil || !strings.Contains(out, "sigstore bundle") {
		t.Fatalf("verify --policy: %v\n%s", err, out)
	}
	out, err = runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "--require-signature", "--policy", pf, dst, filepath.Join(dir, "rootfs"))
	if err != nil || strings.Contains(out, "not verified") {
		t.Fatalf("pull --policy: %v\n%s", err, out)
	}
	other := "docker://" + host + "/team/other:enc"
	if _, err := runCoffer(t, "", "encrypt", "--recipient", "jwe:"+writePub(t, dir), "oci:"+filepath.Join(dir, "app")+":v1", other); err != nil {
		t.Fatal(err)
	}
	oimg, _ := remote.Image(mustRef(t, host+"/team/other:enc"))
	if err := remote.Write(mustRef(t, host+"/team/app:enc"), oimg); err != nil {
		t.Fatal(err)
	}
	if _, err := runCoffer(t, "", "verify", "--policy", pf, dst); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("verify of the replaced image: %v, want ErrPolicyDenied", err)
	}
	_, err = runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "--policy", pf, dst, filepath.Join(dir, "rootfs2"))
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("pull of the replaced image: %v, want ErrPolicyDenied", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rootfs2")); !os.IsNotExist(err) {
		t.Errorf("refused pull left rootfs2: %v", err)
	}
}
