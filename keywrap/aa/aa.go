// Package aa implements the Confidential Containers attestation-agent key
// wrapping scheme, "provider.attestation-agent".
//
// An annotation entry is the JSON of CoCo's AnnotationPacket (field names and
// order as guest-components writes them):
//
//	{"kid":"kbs:///default/image_key/nginx","wrapped_data":"<b64>","iv":"<b64 12 bytes>","wrap_type":"A256GCM"}
//
// wrapped_data is AES-256-GCM (no additional data, 16-byte tag appended) of
// the layer's private options under a 32-byte key-encryption key (KEK); the
// KEK is the KBS resource kid names. The host part of kid is ignored: the
// decrypting side fetches the resource from the broker it is configured with.
package aa

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

const (
	// ProviderName is the keyprovider name of the scheme.
	ProviderName = "attestation-agent"
	// Scheme is the annotation suffix of the scheme.
	Scheme = "provider." + ProviderName
	// AlgorithmA256GCM is the only wrap_type coffer writes and reads.
	AlgorithmA256GCM = "A256GCM"
	// KEKSize is the size of a key-encryption key.
	KEKSize = 32

	ivSize = 12
	// maxEntry bounds an annotation entry; real ones are a few hundred bytes.
	maxEntry = 1 << 20
	// packetVersionV2 is the only version of CoCo's AnnotationPacketV2.
	packetVersionV2 = "0.1.0"
)

// packet is CoCo's AnnotationPacket (v1). The v2 form adds version,
// provider, provider_settings and annotations; with provider "kbs" it means
// the same as v1 and is accepted on read.
type packet struct {
	KID         string `json:"kid"`
	WrappedData string `json:"wrapped_data"`
	IV          string `json:"iv"`
	WrapType    string `json:"wrap_type"`
}

type packetV2Fields struct {
	Version  *string `json:"version"`
	Provider *string `json:"provider"`
}

// NewWrapper returns a Wrapper that wraps the private options under kek
// (32 bytes) and names kid in the annotation. Each Wrap draws a fresh iv.
func NewWrapper(kek []byte, kid string) (keywrap.Wrapper, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("attestation-agent: key-encryption key is %d bytes, want %d", len(kek), KEKSize)
	}
	if _, err := resource.ParseKID(kid); err != nil {
		return nil, err
	}
	return newWrapper(kek, kid)
}

// NewWrapperFor is NewWrapper for a key id already parsed: the annotation
// names p.KID() ("kbs:///repo/type/tag").
func NewWrapperFor(kek []byte, p resource.Path) (keywrap.Wrapper, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("attestation-agent: key-encryption key is %d bytes, want %d", len(kek), KEKSize)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newWrapper(kek, p.KID())
}

func newWrapper(kek []byte, kid string) (keywrap.Wrapper, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	return &wrapper{aead: aead, kid: kid}, nil
}

type wrapper struct {
	aead cipher.AEAD
	kid  string
}

func (w *wrapper) Scheme() string { return Scheme }

func (w *wrapper) Wrap(_ context.Context, privopts []byte) ([]byte, error) {
	iv := make([]byte, ivSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("attestation-agent: drawing iv: %w", err)
	}
	ct := w.aead.Seal(nil, iv, privopts, nil)
	return json.Marshal(packet{
		KID:         w.kid,
		WrappedData: base64.StdEncoding.EncodeToString(ct),
		IV:          base64.StdEncoding.EncodeToString(iv),
		WrapType:    AlgorithmA256GCM,
	})
}

// KeyResolver returns the 32-byte KEK named by kid, as the annotation
// wrote it (e.g. fetched from the broker after attestation). Its errors
// should wrap the spec sentinels (ErrPolicyDenied, ErrNotFound, ...). It is
// a resource.Getter; pass a Getter (agent/client's Client) unless you key
// by the kid string.
type KeyResolver = resource.KIDFunc

// NewUnwrapper returns an Unwrapper that fetches each entry's KEK through
// keys, by the resource path its kid names (parsed once, with the entry),
// and opens wrapped_data with it. A nil keys unwraps nothing (every entry
// fails with spec.ErrNoKey).
func NewUnwrapper(keys resource.Getter) keywrap.Unwrapper {
	if r, ok := keys.(KeyResolver); ok && r == nil {
		keys = nil
	}
	return &unwrapper{keys: keys}
}

type unwrapper struct{ keys resource.Getter }

// fetch asks for the entry's KEK: a KeyResolver by the kid as written,
// any other Getter by the parsed path.
func (u *unwrapper) fetch(ctx context.Context, p *parsedPacket) ([]byte, error) {
	if r, ok := u.keys.(KeyResolver); ok {
		return r(ctx, p.KID)
	}
	return u.keys.Get(ctx, p.path)
}

func (u *unwrapper) Scheme() string { return Scheme }

// Unwrap errors: a malformed entry or unknown wrap_type → spec.ErrUnsupported
// or a plain parse error; no resolver or a failed resolve → spec.ErrNoKey
// (plus the resolver's own sentinel); wrong KEK or altered entry →
// spec.ErrIntegrity.
func (u *unwrapper) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	p, err := parsePacket(entry)
	if err != nil {
		return nil, err
	}
	if u.keys == nil {
		return nil, fmt.Errorf("attestation-agent: no key resolver for %s: %w", p.KID, spec.ErrNoKey)
	}
	kek, err := u.fetch(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("attestation-agent: fetching key %s: %w", p.KID, err)
		}
		return nil, fmt.Errorf("attestation-agent: fetching key %s: %w: %w", p.KID, spec.ErrNoKey, err)
	}
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("attestation-agent: key %s is %d bytes, want %d: %w", p.KID, len(kek), KEKSize, spec.ErrIntegrity)
	}
	return p.open(kek)
}

// parsedPacket is a validated annotation entry.
type parsedPacket struct {
	KID  string
	path resource.Path // KID parsed
	ct   []byte
	iv   []byte
}

func (p *parsedPacket) open(kek []byte) ([]byte, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, p.iv, p.ct, nil)
	if err != nil {
		return nil, fmt.Errorf("attestation-agent: unwrapping layer key for %s: wrong key or tampered annotation: %w", p.KID, spec.ErrIntegrity)
	}
	return pt, nil
}

// parsePacket decodes and validates one annotation entry.
func parsePacket(entry []byte) (*parsedPacket, error) {
	if len(entry) > maxEntry {
		return nil, fmt.Errorf("attestation-agent: annotation entry of %d bytes is too large", len(entry))
	}
	var p packet
	if err := json.Unmarshal(entry, &p); err != nil {
		return nil, fmt.Errorf("attestation-agent: decoding annotation entry: %w", err)
	}
	var v2 packetV2Fields
	if err := json.Unmarshal(entry, &v2); err != nil {
		return nil, fmt.Errorf("attestation-agent: decoding annotation entry: %w", err)
	}
	if v2.Version != nil && *v2.Version != packetVersionV2 {
		return nil, fmt.Errorf("attestation-agent: annotation packet version %q: %w", *v2.Version, spec.ErrUnsupported)
	}
	if v2.Provider != nil && *v2.Provider != "kbs" {
		return nil, fmt.Errorf("attestation-agent: annotation packet for key provider %q (only kbs): %w", *v2.Provider, spec.ErrUnsupported)
	}
	if p.KID == "" || p.WrappedData == "" || p.IV == "" || p.WrapType == "" {
		return nil, errors.New("attestation-agent: annotation entry lacks kid, wrapped_data, iv or wrap_type")
	}
	path, err := resource.ParseKID(p.KID)
	if err != nil {
		return nil, err
	}
	if p.WrapType != AlgorithmA256GCM {
		return nil, fmt.Errorf("attestation-agent: wrap_type %q for %s (only %s): %w", p.WrapType, p.KID, AlgorithmA256GCM, spec.ErrUnsupported)
	}
	iv, err := base64.StdEncoding.DecodeString(p.IV)
	if err != nil {
		return nil, fmt.Errorf("attestation-agent: iv of %s is not base64: %w", p.KID, err)
	}
	if len(iv) != ivSize {
		return nil, fmt.Errorf("attestation-agent: iv of %s is %d bytes, want %d: %w", p.KID, len(iv), ivSize, spec.ErrIntegrity)
	}
	ct, err := base64.StdEncoding.DecodeString(p.WrappedData)
	if err != nil {
		return nil, fmt.Errorf("attestation-agent: wrapped_data of %s is not base64: %w", p.KID, err)
	}
	if len(ct) < 16 {
		return nil, fmt.Errorf("attestation-agent: wrapped_data of %s is shorter than a GCM tag: %w", p.KID, spec.ErrIntegrity)
	}
	return &parsedPacket{KID: p.KID, path: path, ct: ct, iv: iv}, nil
}

// Describe returns the kid of an annotation entry (for inspect).
func Describe(entry []byte) (kid string, err error) {
	p, err := parsePacket(entry)
	if err != nil {
		return "", err
	}
	return p.KID, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("attestation-agent: %w", err)
	}
	return cipher.NewGCM(block)
}
