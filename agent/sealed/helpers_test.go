package sealed_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"testing"

	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

func resign(t *testing.T, key *ecdsa.PrivateKey, h, p string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(h + "." + p))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return "sealed." + h + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func unwrapForTest(t *testing.T, kek []byte, ek string) []byte {
	t.Helper()
	w, _ := base64.StdEncoding.DecodeString(ek)
	b, _ := aes.NewCipher(kek)
	dek, err := josecipher.KeyUnwrap(b, w)
	if err != nil {
		t.Fatal(err)
	}
	return dek
}

func ctrXOR(key, iv, in []byte) []byte {
	b, _ := aes.NewCipher(key)
	out := make([]byte, len(in))
	cipher.NewCTR(b, iv).XORKeyStream(out, in)
	return out
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
