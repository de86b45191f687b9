package pkcs11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/pkcs11"
	"github.com/coffer-dev/coffer/keywrap/pkcs11/pkcs11test"
	"github.com/coffer-dev/coffer/spec"
)

// TestSigner: Ed25519 and P-256 keys imported into SoftHSM sign on the
// token, and the signatures verify with the public keys Go generated.
func TestSigner(t *testing.T) {
	tok := pkcs11test.New(t)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok.Import(edKey, "admin", "0a")
	tok.Import(ecKey, "ear", "0b")
	cfg := pkcs11test.Config()
	msg := []byte("header.payload")

	ed, err := pkcs11.NewSigner(cfg, mustKey(t, tok.KeyYAML(tok.URI("admin", "", "pin-value="+pkcs11test.PIN))))
	if err != nil {
		t.Fatal(err)
	}
	if !edKey.Public().(ed25519.PublicKey).Equal(ed.Public()) {
		t.Fatalf("Ed25519 public key from the token differs from the imported key")
	}
	sig, err := ed.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(edKey.Public().(ed25519.PublicKey), msg, sig) {
		t.Fatalf("token Ed25519 signature does not verify")
	}
	if _, err := ed.Sign(rand.Reader, msg, crypto.SHA256); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("Ed25519 with a digest: got %v, want ErrUnsupported", err)
	}

	ec, err := pkcs11.NewSigner(cfg, mustKey(t, tok.KeyYAML(tok.URI("ear", "0b", "pin-value="+pkcs11test.PIN))))
	if err != nil {
		t.Fatal(err)
	}
	if !ecKey.PublicKey.Equal(ec.Public()) {
		t.Fatalf("P-256 public key from the token differs from the imported key")
	}
	d := sha256.Sum256(msg)
	der, err := ec.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(&ecKey.PublicKey, d[:], der) {
		t.Fatalf("token ECDSA signature (DER) does not verify")
	}
}

// TestSignerErrors: a wrong PIN, a missing object and an RSA key each fail
// in one line that names the token, and never shows the PIN.
func TestSignerErrors(t *testing.T) {
	tok := pkcs11test.New(t)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tok.Import(edKey, "admin", "0a")
	cfg := pkcs11test.Config()
	for _, tc := range []struct {
		name, uri, want string
		is              error
	}{
		{"wrong PIN", tok.URI("admin", "", "pin-value=9876"), `pkcs11: token "coffer" refused the PIN (CKR_PIN_INCORRECT)`, spec.ErrUnauthorized},
		{"no object", tok.URI("nope", "", "pin-value="+pkcs11test.PIN), `pkcs11: token "coffer" has no private key object="nope"`, spec.ErrNotFound},
		{"no PIN", tok.URI("admin", "", ""), "has no PIN", spec.ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pkcs11.NewSigner(cfg, mustKey(t, tok.KeyYAML(tc.uri)))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want %q (%v)", err, tc.want, tc.is)
			}
			if strings.Contains(err.Error(), "9876") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error shows the PIN or spans lines: %q", err)
			}
		})
	}
}

// TestLoadKey: a pkcs11: URI is the key; a key file is parsed; a PEM file
// comes back as bytes.
func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	uri := "pkcs11:token=coffer;object=admin?module-path=" + pkcs11test.Module + "&pin-value=1234"
	k, data, err := pkcs11.LoadKey(uri, pkcs11.MaxKeyFile)
	if err != nil || k == nil || data != nil || k.String() != "pkcs11:token=coffer;object=admin" {
		t.Fatalf("URI: got %v %q %v", k, data, err)
	}
	yml := filepath.Join(dir, "k.yaml")
	os.WriteFile(yml, []byte("pkcs11:\n  uri: "+uri+"\n"), 0o600)
	if k, data, err = pkcs11.LoadKey(yml, pkcs11.MaxKeyFile); err != nil || k == nil || data != nil {
		t.Fatalf("key file: got %v %q %v", k, data, err)
	}
	pemFile := filepath.Join(dir, "k.pem")
	os.WriteFile(pemFile, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600)
	if k, data, err = pkcs11.LoadKey(pemFile, pkcs11.MaxKeyFile); err != nil || k != nil || len(data) == 0 {
		t.Fatalf("PEM: got %v %q %v", k, data, err)
	}
	if _, _, err := pkcs11.LoadKey("pkcs11:token=coffer?module-path=/x.so", pkcs11.MaxKeyFile); err == nil {
		t.Fatalf("URI without object: no error")
	}
}

// BenchmarkSignerSign: one token signature, session and all (what a broker
// with --token-key pkcs11: pays per attestation token).
func BenchmarkSignerSign(b *testing.B) {
	tok := pkcs11test.New(b)
	for i, alg := range []string{"ed25519", "p256"} {
		b.Run(alg, func(b *testing.B) {
			var k crypto.Signer
			opts := crypto.SignerOpts(crypto.Hash(0))
			msg := []byte("header.payload")
			if alg == "ed25519" {
				_, k, _ = ed25519.GenerateKey(rand.Reader)
			} else {
				k, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				d := sha256.Sum256(msg)
				msg, opts = d[:], crypto.SHA256
			}
			tok.Import(k, alg, fmt.Sprintf("%02x", 0x20+i))
			s, err := pkcs11.NewSigner(pkcs11test.Config(), mustKey(b, tok.KeyYAML(tok.URI(alg, "", "pin-value="+pkcs11test.PIN))))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := s.Sign(rand.Reader, msg, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
