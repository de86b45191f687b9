package imagepolicy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

const fixtureDigest = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a"

// fixtureSig reads a recorded containers/image signature (testdata README).
func fixtureSig(t *testing.T, name string) Signature {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "containers-image", name))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Payload     []byte            `json:"payload"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	sig, err := base64.StdEncoding.DecodeString(f.Annotations[CosignSignatureAnnotation])
	if err != nil {
		t.Fatal(err)
	}
	return Signature{Payload: f.Payload, Sig: sig, Source: name, Certificate: f.Annotations[CertificateAnnotation],
		Chain: f.Annotations[ChainAnnotation], SET: f.Annotations[BundleAnnotation]}
}

func fixturePolicy(t *testing.T, req string) *Requirement {
	t.Helper()
	td := filepath.Join("testdata", "containers-image")
	req = strings.NewReplacer("TD/", td+"/").Replace(req)
	p, err := ParsePolicy([]byte(`{"default": [` + req + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.LoadKeys(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return &p.Default[0]
}

// Keyless (Fulcio + Rekor) and key + Rekor signatures cosign made, verified
// offline against the roots the policy names; every binding is needed.
func TestSigstoreFulcioRekorFixtures(t *testing.T) {
	t.Parallel()
	d, _ := v1.NewHash(fixtureDigest)
	img := func(ref string) Image {
		r, err := transport.Parse("docker://" + ref)
		if err != nil {
			t.Fatal(err)
		}
		return Image{Ref: r, Digest: d}
	}
	fulcioImg := img("192.168.64.2:5000/cosign-signed/fulcio-rekor-1:latest")
	keyImg := img("192.168.64.2:5000/cosign-signed/key-1:latest")
	fulcioSig := fixtureSig(t, "fulcio-rekor-valid.signature.json")
	keySig := fixtureSig(t, "key-rekor-valid.signature.json")
	const fulcio = `{"type": "sigstoreSigned", "fulcio": {"caPath": "TD/fulcio_v1.crt.pem", "oidcIssuer": %q, "subjectEmail": %q},
		"rekorPublicKeyPath": %q, "signedIdentity": {"type": "matchRepository"}}`
	const key = `{"type": "sigstoreSigned", "keyPath": %q, "rekorPublicKeyPath": %q, "signedIdentity": {"type": "matchRepository"}}`
	mod := func(s Signature, f func(*Signature)) Signature { f(&s); return s }
	for _, tc := range []struct {
		name string
		req  string
		img  Image
		sig  Signature
		want string // "" = accepted
	}{
		{"fulcio+rekor", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg, fulcioSig, ""},
		{"wrong email", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "someone@example.com", "TD/rekor.pub"), fulcioImg, fulcioSig, "not someone@example.com"},
		{"wrong issuer", fmt.Sprintf(fulcio, "https://accounts.google.com", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg, fulcioSig, "OIDC issuer"},
		{"wrong rekor key", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/cosign.pub"), fulcioImg, fulcioSig, "not signed by"},
		{"no SET", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg,
			mod(fulcioSig, func(s *Signature) { s.SET = "" }), "no Rekor SET"},
		{"no chain", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg,
			mod(fulcioSig, func(s *Signature) { s.Chain = "" }), "Fulcio certificate at"},
		{"no certificate", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg,
			mod(fulcioSig, func(s *Signature) { s.Certificate = "" }), "no Fulcio certificate"},
		{"SET of another signature, outside the certificate's life", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg,
			mod(fulcioSig, func(s *Signature) { s.SET = keySig.SET }), "expired"},
		{"key+rekor, SET of another entry", fmt.Sprintf(key, "TD/cosign2.pub", "TD/rekor.pub"), keyImg,
			mod(keySig, func(s *Signature) { s.SET = fulcioSig.SET }), "logs another payload"},
		{"payload swapped", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), fulcioImg,
			mod(fulcioSig, func(s *Signature) { s.Payload = keySig.Payload }), "does not verify"},
		{"other image name", fmt.Sprintf(fulcio, "https://github.com/login/oauth", "mitr@redhat.com", "TD/rekor.pub"), keyImg, fulcioSig, "does not match"},
		{"key+rekor", fmt.Sprintf(key, "TD/cosign2.pub", "TD/rekor.pub"), keyImg, keySig, ""},
		{"key+rekor, other key", fmt.Sprintf(key, "TD/cosign.pub", "TD/rekor.pub"), keyImg, keySig, "none of the 1 key"},
		{"key+rekor, rekor key mismatch", fmt.Sprintf(key, "TD/cosign2.pub", "TD/cosign.pub"), keyImg, keySig, "not signed by"},
		{"key+rekor, SET missing", fmt.Sprintf(key, "TD/cosign2.pub", "TD/rekor.pub"), keyImg,
			mod(keySig, func(s *Signature) { s.SET = "" }), "no Rekor SET"},
		{"key+rekor, SET tampered", fmt.Sprintf(key, "TD/cosign2.pub", "TD/rekor.pub"), keyImg,
			mod(keySig, func(s *Signature) { s.SET = strings.Replace(s.SET, `"logIndex":`, `"logIndex":1`, 1) }), "not signed by"},
	} {
		r := fixturePolicy(t, tc.req)
		v, err := newSigstoreVerifier(r.keys, r.rekorKeys, r.Fulcio)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err = r.accept(v, []Signature{tc.sig}, tc.img, CosignSignatureType)
		if (tc.want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, spec.ErrPolicyDenied))) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseFulcioRekorPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"fulcio without rekor", `{"type": "sigstoreSigned", "fulcio": {"caData": "eA==", "oidcIssuer": "i", "subjectEmail": "e"}}`, "needs a rekorPublicKey"},
		{"fulcio and key", `{"type": "sigstoreSigned", "keyData": "eA==", "rekorPublicKeyData": "eA==", "fulcio": {"caData": "eA==", "oidcIssuer": "i", "subjectEmail": "e"}}`, "not both"},
		{"fulcio no CA", `{"type": "sigstoreSigned", "rekorPublicKeyData": "eA==", "fulcio": {"oidcIssuer": "i", "subjectEmail": "e"}}`, "caPath, caData"},
		{"fulcio no email", `{"type": "sigstoreSigned", "rekorPublicKeyData": "eA==", "fulcio": {"caData": "eA==", "oidcIssuer": "i"}}`, "subjectEmail"},
		{"two rekor sources", `{"type": "sigstoreSigned", "keyData": "eA==", "rekorPublicKeyData": "eA==", "rekorPublicKeyPath": "/r"}`, "at most one"},
		{"pki", `{"type": "sigstoreSigned", "pki": {}}`, "unknown field"},
		{"rekor on signedBy", `{"type": "signedBy", "keyType": "GPGKeys", "keyData": "eA==", "rekorPublicKeyData": "eA=="}`, "signedBy has no"},
	} {
		_, err := ParsePolicy([]byte(`{"default": [` + tc.in + `]}`))
		if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// FuzzVerifySET: a Rekor SET comes from the registry. Whatever the log's
// key accepts must log exactly the recorded entry (the only one it signed).
func FuzzVerifySET(f *testing.F) {
	td := filepath.Join("testdata", "containers-image")
	raw, err := os.ReadFile(filepath.Join(td, "key-rekor-valid.signature.json"))
	if err != nil {
		f.Fatal(err)
	}
	var fx struct {
		Annotations map[string]string `json:"annotations"`
	}
	json.Unmarshal(raw, &fx)
	set := fx.Annotations[BundleAnnotation]
	pemKey, _ := os.ReadFile(filepath.Join(td, "rekor.pub"))
	v, err := newSigstoreVerifier(nil, [][]byte{pemKey}, nil)
	if err != nil {
		f.Fatal(err)
	}
	_, want, err := verifySET(v.rekor, set)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(set))
	f.Add([]byte(`{"SignedEntryTimestamp":"","Payload":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		_, got, err := verifySET(v.rekor, string(data))
		if err != nil {
			if !errors.Is(err, spec.ErrIntegrity) {
				t.Fatalf("error not wrapping ErrIntegrity: %v", err)
			}
			return
		}
		if fmt.Sprint(*got) != fmt.Sprint(*want) {
			t.Fatalf("a SET the log never signed verified: %+v", got)
		}
	})
}
