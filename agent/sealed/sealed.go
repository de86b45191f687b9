// Package sealed is Confidential Containers' sealed secrets, in
// guest-components' format (confidential-data-hub/hub/src/secret at
// commit 8246e5e0977f6322f0a1b0f77e0739cf1c3e1f74): a signed envelope
// ("sealed." JWS-like, ES256) whose payload says where the secret is
// (type vault: a resource a provider holds) or carries it encrypted
// (type envelope: data under a DEK that a provider's key wraps).
// Providers are a registration table (Register); coffer registers
// "kbs", the broker.
package sealed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/spec"
)

// Sealed secrets in guest-components' format (confidential-data-hub
// secret/mod.rs): "sealed." + base64url(header) + "." + base64url(payload)
// + "." + base64url(ES256 signature over header.payload), all without
// padding. The header is {"alg":"ES256","kid":KID}: KID is a kbs:/// URI
// of the P-256 verification key (a JWK) in the broker, or the name of a
// JWK file in the local key directory. The payload is a Secret.
const (
	SealedPrefix  = "sealed."
	SecretVersion = "0.1.0"
	// MaxSealedSecret bounds a sealed secret before it is parsed.
	MaxSealedSecret = 64 << 10
	maxJWK          = 16 << 10
	maxURI          = 4096
)

// Secret is a sealed secret's payload. Type "vault": the plaintext is the
// secret Name the Provider holds (for "kbs", a kbs:/// resource URI).
// Type "envelope": EncryptedData is the plaintext under a DEK
// (WrapType A256GCM or A256CTR, with IV), and EncryptedKey is that DEK
// wrapped by the Provider's key KeyID.
type Secret struct {
	Version          string            `json:"version"`
	Type             string            `json:"type"`
	Name             string            `json:"name,omitempty"`
	Provider         string            `json:"provider"`
	ProviderSettings map[string]any    `json:"provider_settings"`
	Annotations      map[string]string `json:"annotations"`
	// envelope fields
	KeyID         string `json:"key_id,omitempty"`
	EncryptedKey  string `json:"encrypted_key,omitempty"`
	EncryptedData string `json:"encrypted_data,omitempty"`
	WrapType      string `json:"wrap_type,omitempty"`
	IV            string `json:"iv,omitempty"`
}

type sealedHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

var b64 = base64.RawURLEncoding

// Seal signs s with key (P-256) under kid and returns the sealed secret.
// Version defaults to 0.1.0 and the provider settings and annotations to
// empty objects, as guest-components' secret CLI writes them.
func Seal(s Secret, key *ecdsa.PrivateKey, kid string) (string, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return "", fmt.Errorf("sealing key must be an EC P-256 private key: %w", spec.ErrUnsupported)
	}
	if kid == "" {
		return "", fmt.Errorf("sealing needs a kid (kbs:///repo/type/tag of the verification key): %w", spec.ErrUnsupported)
	}
	if s.Version == "" {
		s.Version = SecretVersion
	}
	if s.ProviderSettings == nil {
		s.ProviderSettings = map[string]any{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if s.Type != "vault" && s.Type != "envelope" {
		return "", fmt.Errorf("secret type %q: want vault or envelope: %w", s.Type, spec.ErrUnsupported)
	}
	h, _ := json.Marshal(sealedHeader{"ES256", kid})
	p, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	sum := sha256.Sum256([]byte(input))
	r, ss, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return SealedPrefix + input + "." + b64.EncodeToString(sig), nil
}

// ParseSealed checks a sealed secret's signature with the key verify
// returns for its kid and returns its payload. Cheap checks (size, shape,
// header) come before the key is fetched; nothing of the payload is parsed
// before the signature verifies.
func ParseSealed(ctx context.Context, sealed []byte, verify func(ctx context.Context, kid string) (*ecdsa.PublicKey, error)) (*Secret, error) {
	if len(sealed) > MaxSealedSecret {
		return nil, badInput("sealed secret of %d bytes (at most %d)", len(sealed), MaxSealedSecret)
	}
	str, ok := strings.CutPrefix(string(sealed), SealedPrefix)
	if !ok {
		return nil, badInput("a sealed secret starts with %q", SealedPrefix)
	}
	parts := strings.Split(str, ".")
	if len(parts) != 3 {
		return nil, badInput("malformed sealed secret: want sealed.<header>.<payload>.<signature>")
	}
	hb, err1 := b64.DecodeString(parts[0])
	sig, err2 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(sig) != 64 {
		return nil, badInput("malformed sealed secret: header or signature is not base64url (unpadded) or the signature is not 64 bytes")
	}
	var h sealedHeader
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, badInput("sealed secret header: %v", err)
	}
	if h.Alg != "ES256" {
		return nil, badInput("sealed secret algorithm %q: only ES256 is accepted", h.Alg)
	}
	if h.Kid == "" || len(h.Kid) > maxURI {
		return nil, badInput("sealed secret header has no kid")
	}
	pub, err := verify(ctx, h.Kid)
	if err != nil {
		return nil, fmt.Errorf("sealed secret verification key %s: %w", h.Kid, err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, sum[:], r, s) {
		return nil, fmt.Errorf("sealed secret signature does not verify with key %s: %w", h.Kid, spec.ErrIntegrity)
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, badInput("sealed secret payload is not base64url (unpadded)")
	}
	var sec Secret
	if err := json.Unmarshal(pb, &sec); err != nil {
		return nil, badInput("malformed sealed secret payload: %v", err)
	}
	if sec.Version != SecretVersion {
		return nil, badInput("sealed secret version %q, want %s", sec.Version, SecretVersion)
	}
	return &sec, nil
}

// GenerateSigningKey returns a fresh P-256 key pair as JWKs: the private
// one for Seal, the public one to store in the broker under the kid.
func GenerateSigningKey() (priv, pub []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if priv, err = json.Marshal(jose.JSONWebKey{Key: k, Algorithm: "ES256"}); err != nil {
		return nil, nil, err
	}
	if pub, err = json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, Algorithm: "ES256"}); err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}

// ParseVerificationKey parses a P-256 public (or private: its public half
// is used) key as a JWK.
func ParseVerificationKey(data []byte) (*ecdsa.PublicKey, error) {
	if len(data) > maxJWK {
		return nil, badInput("verification key of %d bytes (at most %d)", len(data), maxJWK)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(data); err != nil {
		return nil, badInput("verification key is not a JWK: %v", err)
	}
	switch key := k.Key.(type) {
	case *ecdsa.PublicKey:
		if key.Curve == elliptic.P256() {
			return key, nil
		}
	case *ecdsa.PrivateKey:
		if key.Curve == elliptic.P256() {
			return &key.PublicKey, nil
		}
	}
	return nil, badInput("verification key must be an EC P-256 JWK")
}

// ParseSigningKey parses a P-256 private key given as a JWK.
func ParseSigningKey(data []byte) (*ecdsa.PrivateKey, error) {
	if len(data) > maxJWK {
		return nil, errors.New("signing key too large")
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("signing key is not a JWK: %w", err)
	}
	if key, ok := k.Key.(*ecdsa.PrivateKey); ok && key.Curve == elliptic.P256() {
		return key, nil
	}
	return nil, fmt.Errorf("signing key must be an EC P-256 private JWK: %w", spec.ErrUnsupported)
}
