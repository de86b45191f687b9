package mlkem

import (
	"bytes"
	"crypto/mlkem"
	"crypto/subtle"
	"encoding/json"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// jwk is an AKP JWK (draft-ietf-jose-pqc-kem-05 §10): pub is the
// encapsulation key, priv the 64-byte seed.
type jwk struct {
	Kty  string `json:"kty"`
	Alg  string `json:"alg"`
	KID  string `json:"kid,omitempty"`
	Pub  string `json:"pub"`
	Priv string `json:"priv,omitempty"`
}

// IsKey reports, cheaply, whether data looks like an AKP JWK of this
// algorithm (public or private): the test key loaders use before handing
// a file to ParsePrivateKey or ParsePublicKey.
func IsKey(data []byte) bool {
	if len(data) > MaxKeyFile {
		return false
	}
	var k struct {
		Kty string `json:"kty"`
		Alg string `json:"alg"`
	}
	t := bytes.TrimSpace(data)
	return len(t) > 0 && t[0] == '{' && json.Unmarshal(t, &k) == nil && k.Kty == KeyType && k.Alg == Algorithm
}

func parseJWK(data []byte) (*jwk, error) {
	if len(data) > MaxKeyFile {
		return nil, fmt.Errorf("ML-KEM key file of %d bytes is too large: %w", len(data), spec.ErrUnsupported)
	}
	var k jwk
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimSpace(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil || dec.More() {
		return nil, fmt.Errorf("not an AKP JWK (%v): %w", err, spec.ErrUnsupported)
	}
	if k.Kty != KeyType || k.Alg != Algorithm {
		return nil, fmt.Errorf("JWK kty %q alg %q, want %s %s: %w", printable(k.Kty), printable(k.Alg), KeyType, Algorithm, spec.ErrUnsupported)
	}
	return &k, nil
}

// ParsePublicKey parses an AKP JWK (a private one too: its pub) into the
// recipient key and its kid.
func ParsePublicKey(data []byte) (*mlkem.EncapsulationKey768, string, error) {
	k, err := parseJWK(data)
	if err != nil {
		return nil, "", err
	}
	if b64.DecodedLen(len(k.Pub)) != mlkem.EncapsulationKeySize768 {
		return nil, "", fmt.Errorf("ML-KEM-768 pub is not %d bytes: %w", mlkem.EncapsulationKeySize768, spec.ErrUnsupported)
	}
	raw, err := b64.DecodeString(k.Pub)
	if err != nil {
		return nil, "", fmt.Errorf("ML-KEM-768 pub is not base64url: %w", spec.ErrUnsupported)
	}
	ek, err := mlkem.NewEncapsulationKey768(raw)
	if err != nil {
		return nil, "", fmt.Errorf("ML-KEM-768 pub: %v: %w", err, spec.ErrUnsupported)
	}
	return ek, k.KID, nil
}

// ParsePrivateKey parses a private AKP JWK: priv is the seed; pub, when
// present, must be the seed's encapsulation key.
func ParsePrivateKey(data []byte) (*mlkem.DecapsulationKey768, string, error) {
	k, err := parseJWK(data)
	if err != nil {
		return nil, "", err
	}
	if k.Priv == "" {
		return nil, "", fmt.Errorf("ML-KEM-768 JWK has no priv (a public key cannot decrypt): %w", spec.ErrUnsupported)
	}
	if b64.DecodedLen(len(k.Priv)) != mlkem.SeedSize {
		return nil, "", fmt.Errorf("ML-KEM-768 priv is not a %d-byte seed: %w", mlkem.SeedSize, spec.ErrUnsupported)
	}
	seed, err := b64.DecodeString(k.Priv)
	if err != nil {
		return nil, "", fmt.Errorf("ML-KEM-768 priv is not base64url: %w", spec.ErrUnsupported)
	}
	defer clear(seed)
	dk, err := mlkem.NewDecapsulationKey768(seed)
	if err != nil {
		return nil, "", fmt.Errorf("ML-KEM-768 priv: %v: %w", err, spec.ErrUnsupported)
	}
	if k.Pub != "" {
		pub, err := b64.DecodeString(k.Pub)
		if err != nil || subtle.ConstantTimeCompare(pub, dk.EncapsulationKey().Bytes()) != 1 {
			return nil, "", fmt.Errorf("ML-KEM-768 JWK: pub is not the key of priv: %w", spec.ErrUnsupported)
		}
	}
	return dk, k.KID, nil
}

// MarshalPrivateKey returns dk as a private AKP JWK (with its pub).
func MarshalPrivateKey(dk *mlkem.DecapsulationKey768, kid string) ([]byte, error) {
	seed := dk.Bytes()
	defer clear(seed)
	return json.Marshal(jwk{Kty: KeyType, Alg: Algorithm, KID: kid, Pub: b64.EncodeToString(dk.EncapsulationKey().Bytes()), Priv: b64.EncodeToString(seed)})
}

// MarshalPublicKey returns ek as a public AKP JWK.
func MarshalPublicKey(ek *mlkem.EncapsulationKey768, kid string) ([]byte, error) {
	return json.Marshal(jwk{Kty: KeyType, Alg: Algorithm, KID: kid, Pub: b64.EncodeToString(ek.Bytes())})
}
