package imagepolicy_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// cosignRun runs the real cosign offline (no Rekor, no TUF) in dir.
func cosignRun(t *testing.T, bin, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "COSIGN_EXPERIMENTAL=1", "HOME="+dir, "COSIGN_PASSWORD=interop-pass", "TUF_ROOT="+filepath.Join(dir, "tuf"), "SIGSTORE_NO_CACHE=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// The real cosign verifies coffer's signatures, and coffer verifies cosign's.
func TestCosignInterop(t *testing.T) {
	bin := testutil.Cosign(t)
	w := newWorld(t)
	ctx := context.Background()
	dir := t.TempDir()
	if out, err := cosignRun(t, bin, dir, "generate-key-pair", "--output-key-prefix", "cosign"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	pub := filepath.Join(dir, "cosign.pub")
	mine := w.encrypt(t, plainImage(t, "mine"), "team/mine:enc", "default/image_key/mine", false)
	theirs := w.encrypt(t, plainImage(t, "theirs"), "team/theirs:enc", "default/image_key/theirs", false)
	name := func(r transport.Reference) string { n, _ := transport.DockerName(r); return n.String() }

	// coffer signs with cosign's encrypted key; cosign verifies.
	m, err := keys.LoadMaterial(filepath.Join(dir, "cosign.key"), []byte("interop-pass"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := imagepolicy.Sign(ctx, mine, m.Private.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	verify := []string{"verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry", "--output", "json"}
	out, err := cosignRun(t, bin, dir, append(verify, name(mine))...)
	if err != nil || !strings.Contains(out, s.Digest.String()) {
		t.Fatalf("cosign verify of coffer's signature: %v\n%s", err, out)
	}
	// coffer's OCI 1.1 referrer form verifies in cosign's experimental OCI 1.1 mode.
	viaRef := w.encrypt(t, plainImage(t, "via referrer"), "team/viaref:enc", "default/image_key/viaref", false)
	if _, err := imagepolicy.Sign(ctx, viaRef, m.Private.(crypto.Signer), imagepolicy.WithReferrer()); err != nil {
		t.Fatal(err)
	}
	if out, err := cosignRun(t, bin, dir, append(verify, "--experimental-oci11", name(viaRef))...); err != nil {
		t.Fatalf("cosign verify --experimental-oci11 of coffer's referrer signature: %v\n%s", err, out)
	}
	if out, err := cosignRun(t, bin, dir, append(verify, name(viaRef))...); err == nil {
		t.Fatalf("cosign found a .sig signature coffer did not write (the referrer path was not what it verified):\n%s", out)
	}
	// The oracle can say no: another key does not verify it.
	if out, err := cosignRun(t, bin, dir, "generate-key-pair", "--output-key-prefix", "other"); err != nil {
		t.Fatal(out)
	}
	if out, err := cosignRun(t, bin, dir, "verify", "--key", "other.pub", "--insecure-ignore-tlog=true", "--allow-http-registry", "--allow-insecure-registry", name(mine)); err == nil {
		t.Fatalf("cosign verified coffer's signature with an unrelated key:\n%s", out)
	}

	// cosign signs; coffer verifies under a sigstoreSigned policy.
	if out, err := cosignRun(t, bin, dir, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry", "--allow-insecure-registry", name(theirs)); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	policy := func(identity string) *imagepolicy.Policy {
		p, err := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [
			{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": %q}}]}}}`, w.reg+"/team", pub, identity)))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.LoadKeys(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(p *imagepolicy.Policy, r transport.Reference) error {
		chk, _ := imagepolicy.New(imagepolicy.WithPolicy(p), imagepolicy.WithRequireSignature(true))
		_, err := chk.Check(ctx, r, v1.Platform{})
		return err
	}
	if err := check(policy(imagepolicy.IdentityMatchRepository), theirs); err != nil {
		t.Errorf("coffer verify of cosign's signature (matchRepository): %v", err)
	}
	// cosign signs the repository without a tag: as in containers/image,
	// the default matchRepoDigestOrExact does not accept it for a tag.
	if err := check(policy(imagepolicy.IdentityMatchRepoDigestOrExact), theirs); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("cosign signature under matchRepoDigestOrExact for a tag: err = %v, want an identity mismatch", err)
	}
	// cosign's OCI 1.1 referrer mode (no .sig tag): read through the referrers API.
	refd := w.encrypt(t, plainImage(t, "referred"), "team/referred:enc", "default/image_key/referred", false)
	if out, err := cosignRun(t, bin, dir, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry", "--allow-insecure-registry",
		"--registry-referrers-mode=oci-1-1", name(refd)); err != nil {
		t.Fatalf("cosign sign (oci-1-1): %v\n%s", err, out)
	}
	rn, _ := transport.DockerName(refd)
	rimg, _ := remote.Image(rn)
	rd, _ := rimg.Digest()
	if _, err := remote.Image(rn.Context().Tag(imagepolicy.SignatureTag(rd))); err == nil {
		t.Fatal("cosign's oci-1-1 mode wrote a .sig tag: the referrer path is not exercised")
	}
	if err := check(policy(imagepolicy.IdentityMatchRepoDigestOrExact), viaRef); err != nil {
		t.Errorf("coffer verify of its own referrer signature: %v", err)
	}
	if err := check(policy(imagepolicy.IdentityMatchRepository), refd); err != nil {
		t.Errorf("coffer verify of cosign's OCI 1.1 referrer signature: %v", err)
	}
	// And cosign's signature does not vouch for anything else under the name.
	tag, _ := transport.DockerName(theirs)
	push(t, tag, plainImage(t, "evil"))
	if err := check(policy(imagepolicy.IdentityMatchRepository), theirs); err == nil || !strings.Contains(err.Error(), "no signature") {
		t.Errorf("replaced image under cosign's signature: err = %v, want no signature", err)
	} else if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("replaced image: %v is not ErrPolicyDenied", err)
	}
}
