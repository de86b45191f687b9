package imagepolicy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

const conformance = "testdata/sigstore-conformance"

// publicGoodPolicyRoots is the Sigstore public-good Fulcio CAs and Rekor
// v1 keys as PEM, the way a containers-policy.json would name them
// (fulcio.caData, rekorPublicKeyData).
func publicGoodPolicyRoots(t *testing.T) (ca []byte, rekor [][]byte) {
	t.Helper()
	tr, err := root.NewTrustedRootFromPath(filepath.Join(conformance, "trusted-root-public-good.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range tr.FulcioCertificateAuthorities() {
		f := a.(*root.FulcioCertificateAuthority)
		for _, c := range append(f.Intermediates, f.Root) {
			ca = append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	for _, l := range tr.RekorLogs() {
		der, _ := x509.MarshalPKIXPublicKey(l.PublicKey)
		rekor = append(rekor, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	return ca, rekor
}

// containers/image's sigstoreSigned fields (fulcio caData, oidcIssuer,
// subjectEmail; rekorPublicKeyDatas) verify a keyless bundle with a Rekor
// v1 entry, without any trusted_root.json.
func TestBundleContainersPolicyFulcioRekor(t *testing.T) {
	ca, rekor := publicGoodPolicyRoots(t)
	bundle, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/happy-path-v0.3/bundle.sigstore.json"))
	a, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/a.txt"))
	sum := sha256.Sum256(a)
	const id = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
	req := func(email, issuer string, rekorKeys [][]byte) (BundleTrust, error) {
		var rd []string
		for _, k := range rekorKeys {
			rd = append(rd, fmt.Sprintf("%q", base64.StdEncoding.EncodeToString(k)))
		}
		p, err := ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "sigstoreSigned",
			"fulcio": {"caData": %q, "oidcIssuer": %q, "subjectEmail": %q}, "rekorPublicKeyDatas": [%s]}]}`,
			base64.StdEncoding.EncodeToString(ca), issuer, email, strings.Join(rd, ","))))
		if err != nil {
			return BundleTrust{}, err
		}
		return p.Default[0].bundleTrust()
	}
	for _, tc := range []struct {
		name, email, issuer string
		rekor               [][]byte
		ok                  bool
	}{
		{"the identity", id, "https://token.actions.githubusercontent.com", rekor, true},
		{"another subject", "someone@example.com", "https://token.actions.githubusercontent.com", rekor, false},
		{"another issuer", id, "https://accounts.google.com", rekor, false},
		{"another Rekor key", id, "https://token.actions.githubusercontent.com", [][]byte{ecPEM(t)}, false},
	} {
		trust, err := req(tc.email, tc.issuer, tc.rekor)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err = VerifyBundle(context.Background(), bundle, trust, sum[:])
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// trustedRootData parses; with it, fulcio needs no CA and no Rekor key;
// the same bundle verifies through it.
func TestBundlePolicyTrustedRoot(t *testing.T) {
	tr, _ := os.ReadFile(filepath.Join(conformance, "trusted-root-public-good.json"))
	p, err := ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "trustedRootData": %q,
		"fulcio": {"oidcIssuer": "https://token.actions.githubusercontent.com", "subjectEmail": "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"}}]}`,
		base64.StdEncoding.EncodeToString(tr))))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := p.Default[0].bundleTrust()
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/happy-path-v0.3/bundle.sigstore.json"))
	a, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/a.txt"))
	sum := sha256.Sum256(a)
	if _, err := VerifyBundle(context.Background(), bundle, trust, sum[:]); err != nil {
		t.Fatal(err)
	}
	// A v2 keyless signature cannot use it: it says why instead of
	// half-checking.
	v, err := p.Default[0].sigstoreVerifiers()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifySignature(Signature{Payload: []byte("{}")}); err == nil || !strings.Contains(err.Error(), "caPath/caData") {
		t.Errorf("v2 keyless under a trustedRoot-only fulcio: %v", err)
	}
	for _, bad := range []string{
		`{"type": "sigstoreSigned", "trustedRootData": "e30=", "trustedRootPath": "/x", "keyData": "e30="}`,
		`{"type": "sigstoreSigned", "fulcio": {"oidcIssuer": "i", "subjectEmail": "e"}, "rekorPublicKeyData": "e30="}`,
		`{"type": "sigstoreSigned", "trustedRootData": "e30="}`,
		`{"type": "signedBy", "keyType": "GPGKeys", "keyData": "e30=", "trustedRootData": "e30="}`,
	} {
		if _, err := ParsePolicy([]byte(`{"default": [` + bad + `]}`)); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: err = %v, want refused", bad, err)
		}
	}
}

func ecPEM(t testing.TB) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// cosign v3's bundles name only the digest: they pass the digest-bound
// identity rules and never one that needs a signed name.
func TestNamelessBundleIdentityRules(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	bundle, _, err := newKeyBundle(k, "", digest)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	ref, _ := transport.Parse("docker://reg.example/team/app:v1")
	img := Image{Ref: ref, Digest: digest}
	for rule, ok := range map[string]bool{
		`{"type": "matchRepoDigestOrExact"}`:                                      true,
		`{"type": "matchRepository"}`:                                             true,
		`{"type": "matchExact"}`:                                                  false,
		`{"type": "exactRepository", "dockerRepository": "reg.example/team/app"}`: false,
	} {
		p, err := ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": %s}]}`, pub, rule)))
		if err != nil {
			t.Fatal(err)
		}
		r := &p.Default[0]
		v, err := r.sigstoreVerifiers()
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.accept(v, []Signature{{Bundle: bundle, Source: "test"}}, img, CosignSignatureType)
		if ok != (err == nil) {
			t.Errorf("%s: err = %v, want accepted=%v", rule, err, ok)
		}
	}
}

// FuzzVerifyBundle: a bundle comes from the registry. Nothing may panic
// or hang, errors wrap ErrIntegrity or ErrUnsupported, and with the
// signer's key only a bundle over the seed's statement verifies.
func FuzzVerifyBundle(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	good, statement, err := newKeyBundle(k, "reg.example/app:v1", digest)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	for _, c := range []string{"happy-path-v0.1", "happy-path-v0.3", "rekor2-happy-path", "rekor2-dsse-happy-path", "bundle-malformed-json_fail"} {
		b, err := os.ReadFile(filepath.Join(conformance, "bundle-verify", c, "bundle.sigstore.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	want, _ := hex.DecodeString(digest.Hex)
	trust := BundleTrust{Keys: []crypto.PublicKey{&k.PublicKey}}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		_, err := VerifyBundle(context.Background(), data, trust, want)
		if err != nil {
			if !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("error wraps neither ErrIntegrity nor ErrUnsupported: %v", err)
			}
			return
		}
		var b struct {
			DSSE struct {
				Payload []byte `json:"payload"`
			} `json:"dsseEnvelope"`
		}
		if json.Unmarshal(data, &b) == nil && string(b.DSSE.Payload) != string(statement) {
			t.Fatalf("a statement the key never signed verified: %q", b.DSSE.Payload)
		}
	})
}

// BenchmarkVerifyBundle: the cost of one bundle, which bounds what the 64
// bundles read per image can cost: key-based (coffer sign --bundle) and
// keyless with a Rekor v1 entry against a trusted root (conformance).
func BenchmarkVerifyBundle(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}
	keyed, _, _ := newKeyBundle(k, "reg.example/app:v1", digest)
	want, _ := hex.DecodeString(digest.Hex)
	b.Run("key", func(b *testing.B) {
		trust := BundleTrust{Keys: []crypto.PublicKey{&k.PublicKey}}
		for b.Loop() {
			if _, err := VerifyBundle(context.Background(), keyed, trust, want); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("keyless-rekor-v1", func(b *testing.B) {
		tr, _ := root.NewTrustedRootFromPath(filepath.Join(conformance, "trusted-root-public-good.json"))
		bundle, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/happy-path-v0.3/bundle.sigstore.json"))
		a, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/a.txt"))
		sum := sha256.Sum256(a)
		trust := BundleTrust{TrustedRoot: tr, Issuer: "https://token.actions.githubusercontent.com",
			Subject: "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"}
		for b.Loop() {
			if _, err := VerifyBundle(context.Background(), bundle, trust, sum[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A key requirement does not accept a certificate bundle, even one its
// trusted root's Fulcio CA issued: keys and identities do not mix.
func TestBundleKeyRequirementRefusesCertificate(t *testing.T) {
	tr, err := root.NewTrustedRootFromPath(filepath.Join(conformance, "trusted-root-public-good.json"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/happy-path-v0.3/bundle.sigstore.json"))
	a, _ := os.ReadFile(filepath.Join(conformance, "bundle-verify/a.txt"))
	sum := sha256.Sum256(a)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = VerifyBundle(context.Background(), bundle, BundleTrust{TrustedRoot: tr, Keys: []crypto.PublicKey{&k.PublicKey}}, sum[:])
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "not certificate") {
		t.Fatalf("certificate bundle under a key requirement: err = %v, want refused as a certificate", err)
	}
}
