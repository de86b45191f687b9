package flavor

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// ProviderName is SecL's ocicrypt keyprovider name: skopeo's
// --encryption-key provider:isecl:any, annotation
// org.opencontainers.image.enc.keys.provider.isecl.
const ProviderName = "isecl"

// MaxAnnotation bounds an annotation entry before it is parsed.
const MaxAnnotation = 16 << 10

// AnnotationPacket is SecL's provider.isecl annotation entry
// (pkg/model/ocicrypt): the key URL and the layer's private options
// sealed with the key behind it.
type AnnotationPacket struct {
	KeyURL     string `json:"key_url"`
	WrappedKey []byte `json:"wrapped_key"` // JSON of aesPacket
	WrapType   string `json:"wrap_type"`   // "AES"
}

// aesPacket is SecL's AES-256-GCM packet (no associated data).
type aesPacket struct {
	Ciphertext []byte `json:"cipher_text"`
	Nonce      []byte `json:"nonce"`
}

// SealAnnotation seals privopts with the 32-byte key kek (AES-256-GCM,
// random 12-byte nonce) into SecL's annotation entry naming keyURL.
func SealAnnotation(kek []byte, keyURL string, privopts []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	inner, err := json.Marshal(aesPacket{Ciphertext: gcm.Seal(nil, nonce, privopts, nil), Nonce: nonce})
	if err != nil {
		return nil, err
	}
	return json.Marshal(AnnotationPacket{KeyURL: keyURL, WrappedKey: inner, WrapType: "AES"})
}

// ParseAnnotation decodes an annotation entry (bounded) and checks its key URL.
func ParseAnnotation(entry []byte) (*AnnotationPacket, error) {
	if len(entry) > MaxAnnotation {
		return nil, fmt.Errorf("isecl annotation of %d bytes, at most %d: %w", len(entry), MaxAnnotation, spec.ErrUnsupported)
	}
	var p AnnotationPacket
	if err := json.Unmarshal(entry, &p); err != nil {
		return nil, fmt.Errorf("isecl annotation: %v: %w", err, spec.ErrUnsupported)
	}
	if p.WrapType != "AES" {
		return nil, fmt.Errorf("isecl annotation: wrap_type %q, want AES: %w", p.WrapType, spec.ErrUnsupported)
	}
	if _, _, err := ParseKeyURL(p.KeyURL); err != nil {
		return nil, fmt.Errorf("isecl annotation: %v: %w", err, spec.ErrUnsupported)
	}
	return &p, nil
}

// Open recovers the private options with kek.
func (p *AnnotationPacket) Open(kek []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	var a aesPacket
	if err := json.Unmarshal(p.WrappedKey, &a); err != nil || len(a.Nonce) != gcm.NonceSize() {
		return nil, fmt.Errorf("isecl annotation: malformed wrapped_key: %w", spec.ErrUnsupported)
	}
	pt, err := gcm.Open(nil, a.Nonce, a.Ciphertext, nil)
	if err != nil {
		return nil, fmt.Errorf("isecl annotation: the key of %s does not open it: %w", p.KeyURL, spec.ErrIntegrity)
	}
	return pt, nil
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("isecl key of %d bytes, want 32: %w", len(kek), spec.ErrNoKey)
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
