package flavor_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/jcs"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
)

func selfSigned(t testing.TB, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flavor signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var digest = base64.StdEncoding.EncodeToString(make([]byte, sha512.Size384))

func newFlavor(t testing.TB) *flavor.Flavor {
	t.Helper()
	f, err := flavor.New(flavor.PartImage, "cirros", "https://kbs.example:8080/kbs/v1/keys/2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c/transfer", digest)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"rsa", rsaKey}, {"ecdsa", ecKey}, {"ed25519", edKey}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFlavor(t)
			doc, err := flavor.Sign(f, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := flavor.Verify(doc, []*x509.Certificate{selfSigned(t, tc.key)})
			if err != nil {
				t.Fatal(err)
			}
			if got.Meta.ID != f.Meta.ID || got.Meta.Description.Label != "cirros" || got.Encryption.KeyURL != f.Encryption.KeyURL || !got.EncryptionRequired {
				t.Errorf("verified flavor = %+v, want %+v", got, f)
			}
		})
	}
}

// The attacks of the issue: one changed byte, no signature, a foreign
// signer, a signature moved onto another flavor. Re-indenting is not a
// change (the signature covers the canonical form).
func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	trusted := []*x509.Certificate{selfSigned(t, key)}
	doc, err := flavor.Sign(newFlavor(t), key)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := flavor.Sign(newFlavor(t), other)
	second, _ := flavor.Sign(newFlavor(t), key)
	var s, s2 flavor.Signed
	json.Unmarshal(doc, &s)
	json.Unmarshal(second, &s2)
	swapped, _ := json.Marshal(flavor.Signed{Flavor: s2.Flavor, Signature: s.Signature})
	unsigned, _ := json.Marshal(flavor.Signed{Flavor: s.Flavor})
	var indented bytes.Buffer
	json.Indent(&indented, doc, "", "  ")

	for _, tc := range []struct {
		name    string
		doc     []byte
		wantErr error
	}{
		{"as signed", doc, nil},
		{"re-indented", indented.Bytes(), nil},
		{"one byte changed", bytes.Replace(doc, []byte("cirros"), []byte("cirrus"), 1), spec.ErrIntegrity},
		{"digest changed", bytes.Replace(doc, []byte(`"AAAA`), []byte(`"AAAB`), 1), spec.ErrIntegrity},
		{"encryption_required flipped", bytes.Replace(doc, []byte(`"encryption_required":true`), []byte(`"encryption_required":false`), 1), spec.ErrIntegrity},
		{"unsigned", unsigned, spec.ErrIntegrity},
		{"foreign signer", foreign, spec.ErrIntegrity},
		{"signature of another flavor", swapped, spec.ErrIntegrity},
		{"not json", []byte("{"), spec.ErrUnsupported},
		{"too deep", []byte(strings.Repeat("[", 100)), spec.ErrUnsupported},
		{"too big", bytes.Repeat([]byte(" "), flavor.MaxSignedFlavor+1), spec.ErrUnsupported},
	} {
		_, err := flavor.Verify(tc.doc, trusted)
		if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
	if _, err := flavor.Verify(doc, nil); err == nil {
		t.Error("Verify with no trusted signer succeeded")
	}
}

// A flavor signed as SecL's WPM signs it (RSA PKCS#1 v1.5 SHA-384 over
// json.Marshal of the flavor, not canonical: struct field order) verifies.
func TestVerifySecLSigned(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 3072)
	raw := []byte(`{"meta":{"id":"8d3e5c1a-7f2b-4c9d-a1e0-3b4c5d6e7f80","description":{"flavor_part":"IMAGE","label":"secl-vm"}},"encryption_required":true,"encryption":{"key_url":"https://kbs:9443/kbs/v1/keys/5b1c8e2f-3a4d-4e6f-8a9b-0c1d2e3f4a5b/transfer","digest":"` + digest + `"},"integrity_enforced":false}`)
	if c, _ := jcs.Canonicalize(raw); bytes.Equal(c, raw) {
		t.Fatal("test vector is canonical: it would not test the raw path")
	}
	h := sha512.Sum384(raw)
	sig, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA384, h[:])
	doc, _ := json.Marshal(flavor.Signed{Flavor: raw, Signature: base64.StdEncoding.EncodeToString(sig)})
	f, err := flavor.Verify(doc, []*x509.Certificate{selfSigned(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Meta.Description.Label, "secl-vm"; got != want {
		t.Errorf("label = %q, want %q", got, want)
	}
}

// FuzzVerify: no document verifies under the trusted key unless it is the
// signed flavor (up to JSON formatting), and whatever Parse accepts passes Check.
func FuzzVerify(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	trusted := []*x509.Certificate{selfSigned(f, key)}
	fl, _ := flavor.New(flavor.PartImage, "fuzz", "http://127.0.0.1/kbs/v1/keys/2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c/transfer", digest)
	doc, err := flavor.Sign(fl, key)
	if err != nil {
		f.Fatal(err)
	}
	var s flavor.Signed
	json.Unmarshal(doc, &s)
	want := []byte(s.Flavor)
	f.Add(doc)
	f.Add([]byte(`{"flavor":{"meta":{"id":"x"}},"signature":""}`))
	f.Add([]byte(`{"flavor":null}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if _, pf, err := flavor.Parse(in); err == nil {
			if cerr := pf.Check(); cerr != nil {
				t.Fatalf("Parse accepted a flavor Check refuses: %v", cerr)
			}
		}
		got, err := flavor.Verify(in, trusted)
		if err != nil {
			return
		}
		var gs flavor.Signed
		if json.Unmarshal(in, &gs) != nil {
			t.Fatal("verified a document that is not a signed flavor")
		}
		c, cerr := jcs.Canonicalize(gs.Flavor)
		if cerr != nil || !bytes.Equal(c, want) {
			t.Fatalf("verified a flavor that is not the signed one: %s", gs.Flavor)
		}
		if got.Meta.ID != fl.Meta.ID {
			t.Fatalf("verified id %s, signed %s", got.Meta.ID, fl.Meta.ID)
		}
	})
}
