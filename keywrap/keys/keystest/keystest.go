// Package keystest generates keys, certificates and key files for tests of
// the key wrappers. Nothing here is meant for production use.
package keystest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var (
	rsaMu   sync.Mutex
	rsaKeys []*rsa.PrivateKey
)

// RSA returns the i-th RSA-2048 key of a per-process pool (generated once).
func RSA(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaMu.Lock()
	defer rsaMu.Unlock()
	for len(rsaKeys) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaKeys = append(rsaKeys, k)
	}
	return rsaKeys[i]
}

// EC returns a fresh ECDSA key on curve c.
func EC(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Cert returns a self-signed certificate for key (an RSA or EC private key),
// with the given common name, and its DER.
func Cert(t testing.TB, key crypto.Signer, cn string) (*x509.Certificate, []byte) {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"coffer tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, der
}

// PEM encodes der as one PEM block of the given type.
func PEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// PKCS8 returns the PKCS#8 DER of key.
func PKCS8(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// PKIX returns the PKIX DER of a public key.
func PKIX(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Write writes data to name under dir with mode 0600 and returns the path.
func Write(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// PGP returns a fresh OpenPGP entity (RSA-2048 primary and subkey).
func PGP(t testing.TB, name string) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(name, "test", name+"@example.com", &packet.Config{
		Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048,
		DefaultCipher: packet.CipherAES256, DefaultHash: crypto.SHA256,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// PGPPublic serializes the public part of e, armored or binary.
func PGPPublic(t testing.TB, e *openpgp.Entity, armored bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := &buf
	if armored {
		aw, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Serialize(aw); err != nil {
			t.Fatal(err)
		}
		if err := aw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// PGPSecret serializes the secret part of e, armored or binary, encrypted with
// passphrase when it is not empty. e itself is left unencrypted.
func PGPSecret(t testing.TB, e *openpgp.Entity, armored bool, passphrase []byte) []byte {
	t.Helper()
	// Work on a re-read copy so encrypting does not alter e.
	var plain bytes.Buffer
	if err := e.SerializePrivate(&plain, nil); err != nil {
		t.Fatal(err)
	}
	c, err := openpgp.ReadEntity(packet.NewReader(&plain))
	if err != nil {
		t.Fatal(err)
	}
	if len(passphrase) > 0 {
		if err := c.EncryptPrivateKeys(passphrase, nil); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if !armored {
		if err := c.SerializePrivateWithoutSigning(&buf, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	aw, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SerializePrivateWithoutSigning(aw, nil); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Curves are the NIST curves JWE ECDH-ES supports.
var Curves = []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()}
