package keys

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
)

// cosign's own encrypted key (testdata/cosign, written by cosign 2.6.5)
// opens with its password to the private half of cosign.pub.
func TestCosignEncryptedKey(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/cosign/cosign.key")
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile("testdata/cosign/cosign.pub")
	b, _ := pem.Decode(pubPEM)
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMaterial("cosign.key", raw, []byte("coffer-test"))
	if err != nil {
		t.Fatal(err)
	}
	k, ok := m.Private.(*ecdsa.PrivateKey)
	if !ok || !k.PublicKey.Equal(pub) {
		t.Fatalf("opened key %T does not match cosign.pub", m.Private)
	}
	for _, tc := range []struct {
		pass    string
		missing bool
	}{{"wrong", false}, {"", true}} {
		_, err := ParseMaterial("cosign.key", raw, []byte(tc.pass))
		var pe *PasswordError
		if !errors.As(err, &pe) || pe.Missing != tc.missing {
			t.Errorf("password %q: err = %v, want PasswordError{Missing: %v}", tc.pass, err, tc.missing)
		}
	}
	// A hostile envelope asking for a huge scrypt cost is refused before scrypt runs.
	evil := pem.EncodeToMemory(&pem.Block{Type: PEMSigstoreEncrypted, Bytes: []byte(
		`{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}`)})
	if _, err := ParseMaterial("evil.key", evil, []byte("x")); err == nil || errors.As(err, new(*PasswordError)) {
		t.Errorf("huge scrypt N: err = %v, want a bounds error", err)
	}
}
