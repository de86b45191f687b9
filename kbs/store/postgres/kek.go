package postgres

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coffer-dev/coffer/spec"
)

// KEKSize is the length of the key-encryption key.
const KEKSize = 32

// LoadKEK reads a key-encryption key file: 32 raw bytes, or 64 hex digits,
// or standard base64 of 32 bytes (surrounding whitespace ignored), e.g.
// `head -c32 /dev/urandom > kek` or `openssl rand -hex 32 > kek`.
func LoadKEK(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading store kek: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, fmt.Errorf("reading store kek: %w", err)
	}
	k, err := ParseKEK(raw)
	if err != nil {
		return nil, fmt.Errorf("store kek %s: %w", path, err)
	}
	return k, nil
}

// ParseKEK accepts the encodings LoadKEK documents.
func ParseKEK(raw []byte) ([]byte, error) {
	if len(raw) == KEKSize {
		return append([]byte(nil), raw...), nil
	}
	t := bytes.TrimSpace(raw)
	if len(t) == 2*KEKSize {
		if k, err := hex.DecodeString(string(t)); err == nil {
			return k, nil
		}
	}
	if k, err := base64.StdEncoding.DecodeString(string(t)); err == nil && len(k) == KEKSize {
		return k, nil
	}
	return nil, fmt.Errorf("want %d raw bytes, %d hex digits or base64 of %d bytes: %w", KEKSize, 2*KEKSize, KEKSize, spec.ErrUnsupported)
}

// keys are what the KEK is expanded into: an AEAD per kind of secret and a
// public identifier stored next to every ciphertext, so a replica given the
// wrong KEK says so instead of failing to decrypt.
type keys struct {
	resource cipher.AEAD
	session  cipher.AEAD
	id       []byte // 8 bytes: HMAC-SHA256(KEK, label), reveals nothing of the KEK
}

func deriveKeys(kek []byte) *keys {
	aead := func(label string) cipher.AEAD {
		k, err := hkdf.Key(sha256.New, kek, nil, label, 32)
		if err != nil {
			panic(err) // only for lengths hkdf cannot produce
		}
		b, _ := aes.NewCipher(k)
		g, _ := cipher.NewGCM(b)
		return g
	}
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("coffer kbs store kek id"))
	return &keys{resource: aead("coffer kbs resource v1"), session: aead("coffer kbs session v1"), id: m.Sum(nil)[:8]}
}

// seal returns nonce‖ciphertext‖tag of pt, bound to aad.
func seal(a cipher.AEAD, pt, aad []byte) []byte {
	out := make([]byte, a.NonceSize(), a.NonceSize()+len(pt)+a.Overhead())
	_, _ = rand.Read(out)
	return a.Seal(out, out, pt, aad)
}

var errWrongKEK = errors.New("encrypted under a different store kek")

// keyring is the current keys (seal and open) and, during a rotation, the
// previous ones (open only).
type keyring struct {
	cur, prev *keys
}

// open reverses seal with the keys whose id was stored with the
// ciphertext; session selects the session AEAD instead of the resource one.
func (r keyring) open(session bool, kekID, ct, aad []byte) ([]byte, error) {
	k := r.cur
	if !hmac.Equal(kekID, k.id) {
		if r.prev == nil || !hmac.Equal(kekID, r.prev.id) {
			return nil, fmt.Errorf("%w (id %x, this replica's is %x): give every replica the same --store-kek: %w", errWrongKEK, kekID, r.cur.id, spec.ErrIntegrity)
		}
		k = r.prev
	}
	a := k.resource
	if session {
		a = k.session
	}
	if len(ct) < a.NonceSize()+a.Overhead() {
		return nil, fmt.Errorf("stored ciphertext too short: %w", spec.ErrIntegrity)
	}
	pt, err := a.Open(nil, ct[:a.NonceSize()], ct[a.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("stored ciphertext does not authenticate (tampered or moved to another row): %w", spec.ErrIntegrity)
	}
	return pt, nil
}
