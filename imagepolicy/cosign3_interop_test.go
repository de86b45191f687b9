package imagepolicy_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// cosign v3 signs in the bundle format by default: coffer verifies its
// bundles, and cosign v3 verifies coffer sign --bundle's. All offline:
// no Rekor upload, no TUF (the signing config is off).
func TestCosignV3BundleInterop(t *testing.T) {
	bin := testutil.CosignV3(t)
	w := newWorld(t)
	ctx := context.Background()
	dir := t.TempDir()
	if out, err := cosignRun(t, bin, dir, "generate-key-pair", "--output-key-prefix", "cosign"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	if out, err := cosignRun(t, bin, dir, "generate-key-pair", "--output-key-prefix", "other"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	pub := filepath.Join(dir, "cosign.pub")
	name := func(r transport.Reference) string { n, _ := transport.DockerName(r); return n.String() }
	reg := []string{"--allow-http-registry", "--allow-insecure-registry"}
	policyAs := func(key, identity string) *imagepolicy.Policy {
		p, err := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [
			{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": %q}}]}}}`, w.reg+"/team", key, identity)))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.LoadKeys(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policy := func(key string) *imagepolicy.Policy { return policyAs(key, imagepolicy.IdentityMatchRepoDigestOrExact) }
	check := func(p *imagepolicy.Policy, r transport.Reference) (string, error) {
		chk, _ := imagepolicy.New(imagepolicy.WithPolicy(p), imagepolicy.WithRequireSignature(true))
		res, err := chk.Check(ctx, r, v1.Platform{})
		return strings.Join(res.Vouched, " "), err
	}

	// cosign v3 sign --key (bundle format) → coffer verifies.
	theirs := w.encrypt(t, plainImage(t, "theirs"), "team/theirs:enc", "default/image_key/theirs", false)
	if out, err := cosignRun(t, bin, dir, append([]string{"sign", "--key", "cosign.key", "--tlog-upload=false", "--use-signing-config=false", "--yes"},
		append(reg, name(theirs))...)...); err != nil {
		t.Fatalf("cosign v3 sign: %v\n%s", err, out)
	}
	if v, err := check(policy(pub), theirs); err != nil || !strings.Contains(v, "sigstore bundle") {
		t.Fatalf("coffer verify of cosign v3's bundle: %v (vouched %q)", err, v)
	}
	if _, err := check(policy(filepath.Join(dir, "other.pub")), theirs); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("cosign v3's bundle under another key: err = %v, want denied", err)
	}
	// cosign v3 signs no name: a rule that needs one refuses it.
	if _, err := check(policyAs(pub, imagepolicy.IdentityMatchExact), theirs); !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "no name") {
		t.Errorf("cosign v3's nameless bundle under matchExact: err = %v, want denied for want of a name", err)
	}
	tag, _ := transport.DockerName(theirs)
	push(t, tag, plainImage(t, "evil"))
	if _, err := check(policy(pub), theirs); !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "no signature") {
		t.Errorf("replaced image under cosign v3's bundle: err = %v, want no signature", err)
	}

	// coffer sign --bundle → cosign v3 verifies.
	mine := w.encrypt(t, plainImage(t, "mine"), "team/mine:enc", "default/image_key/mine", false)
	m, err := keys.LoadMaterial(filepath.Join(dir, "cosign.key"), []byte("interop-pass"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := imagepolicy.Sign(ctx, mine, m.Private.(crypto.Signer), imagepolicy.WithBundle())
	if err != nil {
		t.Fatal(err)
	}
	verify := append([]string{"verify", "--insecure-ignore-tlog=true", "--output", "json"}, reg...)
	out, err := cosignRun(t, bin, dir, append(verify, "--key", pub, name(mine))...)
	if err != nil || !strings.Contains(out, s.Digest.Hex) {
		t.Fatalf("cosign v3 verify of coffer's bundle: %v\n%s", err, out)
	}
	// The oracle can say no.
	if out, err := cosignRun(t, bin, dir, append(verify, "--key", "other.pub", name(mine))...); err == nil {
		t.Fatalf("cosign v3 verified coffer's bundle with an unrelated key:\n%s", out)
	}
}
