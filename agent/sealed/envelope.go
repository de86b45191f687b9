package sealed

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// Envelope wrap types (guest-components' crypto::WrapType names).
const (
	WrapA256GCM = "A256GCM"
	WrapA256CTR = "A256CTR"
)

// SealEnvelope makes the payload of an envelope secret: plaintext under a
// fresh DEK (A256GCM), the DEK wrapped by provider's Wrap with kek for
// keyID. Sign the result with Seal.
func SealEnvelope(plaintext []byte, provider, keyID string, kek []byte) (Secret, error) {
	p, err := lookup(provider)
	if err != nil {
		return Secret{}, err
	}
	if p.Wrap == nil {
		return Secret{}, fmt.Errorf("provider %q cannot wrap envelope keys in coffer: %w", provider, ErrNoProvider)
	}
	if len(plaintext) > MaxSealedSecret/2 {
		return Secret{}, badInput("secret of %d bytes: an envelope holds at most %d", len(plaintext), MaxSealedSecret/2)
	}
	s := Secret{Type: "envelope", Provider: provider, KeyID: keyID, WrapType: WrapA256GCM}
	dek := make([]byte, 32)
	defer clear(dek)
	rand.Read(dek)
	wrapped, err := p.Wrap(&s, kek, dek)
	if err != nil {
		return Secret{}, err
	}
	gcm, err := newGCM(dek)
	if err != nil {
		return Secret{}, err
	}
	iv := make([]byte, gcm.NonceSize())
	rand.Read(iv)
	s.EncryptedKey = base64.StdEncoding.EncodeToString(wrapped)
	s.IV = base64.StdEncoding.EncodeToString(iv)
	s.EncryptedData = base64.StdEncoding.EncodeToString(gcm.Seal(nil, iv, plaintext, nil))
	return s, nil
}

// openEnvelope unwraps the DEK with the provider and decrypts the data.
func openEnvelope(ctx context.Context, env Env, p Provider, s *Secret) ([]byte, error) {
	wrapped, err1 := base64.StdEncoding.DecodeString(s.EncryptedKey)
	iv, err2 := base64.StdEncoding.DecodeString(s.IV)
	data, err3 := base64.StdEncoding.DecodeString(s.EncryptedData)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, badInput("envelope secret: encrypted_key, iv and encrypted_data must be standard base64")
	}
	if len(wrapped) == 0 {
		return nil, badInput("envelope secret has no encrypted_key")
	}
	// Cheap checks before the provider is asked for the key.
	switch s.WrapType {
	case WrapA256GCM:
		if len(iv) != 12 || len(data) < 16 {
			return nil, badInput("envelope secret: A256GCM wants a 12-byte iv and at least the 16-byte tag")
		}
	case WrapA256CTR:
		if len(iv) != aes.BlockSize {
			return nil, badInput("envelope secret: A256CTR wants a 16-byte iv")
		}
	default:
		return nil, badInput("envelope wrap_type %q: want A256GCM or A256CTR", s.WrapType)
	}
	dek, err := p.Unwrap(ctx, env, s, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	if len(dek) != 32 {
		return nil, fmt.Errorf("envelope secret: the provider's DEK is %d bytes, want 32: %w", len(dek), ErrMalformed)
	}
	if s.WrapType == WrapA256CTR {
		// Unauthenticated by itself: the sealed secret's signature covers
		// the ciphertext, and it was checked before this point.
		b, _ := aes.NewCipher(dek)
		out := make([]byte, len(data))
		cipher.NewCTR(b, iv).XORKeyStream(out, data)
		return out, nil
	}
	gcm, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, iv, data, nil)
	if err != nil {
		return nil, fmt.Errorf("envelope secret: the data does not decrypt with the unwrapped key: %w", spec.ErrIntegrity)
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
