// Package mlkem wraps layer options for ML-KEM-768 recipients (FIPS 203,
// Go's crypto/mlkem): a JWE per draft-ietf-jose-pqc-kem-05 with the
// algorithm trustee's prototype follows (confidential-containers/trustee
// kbs/src/jwe/akp.rs at 03cd7bff88ad177fcb4f6537bc964f3365d7b199, its issue
// #1271): alg "ML-KEM-768+A192KW", enc "A256GCM".
//
// Wrap: encapsulate to the recipient's key (1184-byte encapsulation key) →
// 32-byte shared secret and a 1088-byte KEM ciphertext; KMAC256 KDF → a
// 24-byte AES-192 key-wrapping key; a random 32-byte CEK is AES-KW wrapped
// (RFC 3394) into encrypted_key; the payload (privopts) is AES-256-GCM
// under the CEK with AAD = the protected header's base64url text. The
// KEM ciphertext travels in the protected header's "ek" member. The entry
// is JWE flattened JSON, one object per recipient, so ocicrypt (skopeo,
// containerd's imgcrypt) sees one more jwe entry it cannot open and skips
// it for the others.
//
// Keys are JWKs of key type "AKP" (the draft's algorithm key pair):
// {"kty":"AKP","alg":"ML-KEM-768+A192KW","pub":"<b64url 1184 B>"} and, for
// the private key, "priv": the 64-byte FIPS 203 seed (d‖z).
//
// Wrapper and Unwrapper are keywrap.Wrapper and keywrap.Unwrapper; the
// package imports only the standard library, go-jose's key wrap and spec,
// because the broker's wire package (kbs/protocol, linked into guests)
// seals resources with it too.
package mlkem

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
)

// Algorithm is the JOSE alg of this scheme (draft-ietf-jose-pqc-kem-05).
const Algorithm = "ML-KEM-768+A192KW"

// Scheme is the annotation suffix its entries go under: they are JWEs.
const Scheme = "jwe"

// KeyType is the JWK kty of ML-KEM keys.
const KeyType = "AKP"

const (
	enc          = "A256GCM"
	kwkLen       = 24 // AES-192 key wrap
	cekLen       = 32
	wrappedLen   = cekLen + 8
	ivLen        = 12
	tagLen       = 16
	maxEntry     = 256 << 10 // an entry wraps privopts (~200 bytes) plus a 1088-byte ek
	maxProtected = 8 << 10
	// MaxKeyFile bounds a key file ParseKey reads.
	MaxKeyFile = 64 << 10
)

// Wrapper wraps for one ML-KEM-768 recipient (one entry per recipient: a
// JWE of this algorithm has one recipient).
type Wrapper struct {
	key *mlkem.EncapsulationKey768
	kid string
}

// NewWrapper returns the wrapper of one recipient; kid, if set, is written
// in the protected header.
func NewWrapper(key *mlkem.EncapsulationKey768, kid string) (*Wrapper, error) {
	if key == nil {
		return nil, errors.New("mlkem: no recipient key")
	}
	return &Wrapper{key: key, kid: kid}, nil
}

// Scheme is the annotation suffix ("jwe").
func (w *Wrapper) Scheme() string { return Scheme }

// Wrap seals privopts for the recipient (see Seal).
func (w *Wrapper) Wrap(ctx context.Context, privopts []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return Seal(w.key, w.kid, privopts)
}

// header is the protected header: alg and enc first, then the other
// members in sorted order (WIRE.md §4's interop rule for trustee's client,
// which re-serializes the header to compute the AAD).
type header struct {
	Alg string `json:"alg"`
	Enc string `json:"enc"`
	EK  string `json:"ek"`
	KID string `json:"kid,omitempty"`
}

// entry is JWE flattened JSON.
type entry struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

var b64 = base64.RawURLEncoding

// Seal encrypts payload for one ML-KEM-768 key: a JWE flattened JSON
// object (see the package documentation).
func Seal(k *mlkem.EncapsulationKey768, kid string, payload []byte) ([]byte, error) {
	shared, ct := k.Encapsulate()
	kwk := kdf(shared, Algorithm, kwkLen)
	clear(shared)
	defer clear(kwk)
	cek := make([]byte, cekLen)
	rand.Read(cek)
	defer clear(cek)
	kw, err := aes.NewCipher(kwk)
	if err != nil {
		return nil, err
	}
	wrapped, err := josecipher.KeyWrap(kw, cek)
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(header{Alg: Algorithm, Enc: enc, EK: b64.EncodeToString(ct), KID: kid})
	if err != nil {
		return nil, err
	}
	protected := b64.EncodeToString(hdr)
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, ivLen)
	rand.Read(iv)
	sealed := gcm.Seal(nil, iv, payload, []byte(protected))
	n := len(sealed) - tagLen
	return json.Marshal(entry{
		Protected:    protected,
		EncryptedKey: b64.EncodeToString(wrapped),
		IV:           b64.EncodeToString(iv),
		Ciphertext:   b64.EncodeToString(sealed[:n]),
		Tag:          b64.EncodeToString(sealed[n:]),
	})
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Parsed is a validated entry: every field decoded and of its fixed size.
type Parsed struct {
	// KID is the protected header's kid ("" if none).
	KID string
	// protected is the header's base64url text (the AAD).
	protected                        string
	ek, wrapped, iv, ciphertext, tag []byte
}

// ErrNotThisScheme says an entry is a JWE of another algorithm (a jwe
// entry for RSA or EC keys): not an error for a caller trying schemes.
var ErrNotThisScheme = errors.New("not an ML-KEM-768 JWE entry")

// Parse validates an entry without any key: JWE flattened JSON whose
// protected header names alg ML-KEM-768+A192KW and enc A256GCM, with an
// ek of 1088 bytes, a 40-byte encrypted_key, a 12-byte iv and a 16-byte
// tag. Sizes are checked before decoding. A JWE of another algorithm (or
// the general serialization ocicrypt writes for several recipients) is
// ErrNotThisScheme (and spec.ErrNoKey); anything malformed is
// spec.ErrUnsupported.
func Parse(data []byte) (*Parsed, error) {
	if len(data) > maxEntry {
		return nil, fmt.Errorf("mlkem: entry of %d bytes is too large: %w", len(data), spec.ErrUnsupported)
	}
	var e entry
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&e); err != nil || dec.More() {
		return nil, fmt.Errorf("mlkem: entry is not a JWE JSON object: %w", spec.ErrUnsupported)
	}
	if e.Protected == "" || len(e.Protected) > maxProtected {
		return nil, fmt.Errorf("mlkem: %w: %w", ErrNotThisScheme, spec.ErrNoKey)
	}
	raw, err := b64.DecodeString(e.Protected)
	if err != nil {
		return nil, fmt.Errorf("mlkem: protected header is not base64url: %w", spec.ErrUnsupported)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("mlkem: protected header is not a JSON object: %w", spec.ErrUnsupported)
	}
	if alg, _ := h["alg"].(string); alg != Algorithm {
		return nil, fmt.Errorf("mlkem: %w: %w", ErrNotThisScheme, spec.ErrNoKey)
	}
	if v, _ := h["enc"].(string); v != enc {
		return nil, fmt.Errorf("mlkem: enc %q (only %s): %w", printable(v), enc, spec.ErrUnsupported)
	}
	if _, ok := h["crit"]; ok {
		return nil, fmt.Errorf("mlkem: a crit header is not understood: %w", spec.ErrUnsupported)
	}
	if _, ok := h["zip"]; ok {
		return nil, fmt.Errorf("mlkem: compressed payloads are not accepted: %w", spec.ErrUnsupported)
	}
	p := &Parsed{protected: e.Protected}
	p.KID, _ = h["kid"].(string)
	ekText, _ := h["ek"].(string)
	for _, f := range []struct {
		name string
		text string
		n    int
		dst  *[]byte
	}{
		{"ek", ekText, mlkem.CiphertextSize768, &p.ek},
		{"encrypted_key", e.EncryptedKey, wrappedLen, &p.wrapped},
		{"iv", e.IV, ivLen, &p.iv},
		{"tag", e.Tag, tagLen, &p.tag},
	} {
		if b64.DecodedLen(len(f.text)) != f.n {
			return nil, fmt.Errorf("mlkem: %s is not %d bytes: %w", f.name, f.n, spec.ErrUnsupported)
		}
		if *f.dst, err = b64.DecodeString(f.text); err != nil {
			return nil, fmt.Errorf("mlkem: %s is not base64url: %w", f.name, spec.ErrUnsupported)
		}
	}
	if p.ciphertext, err = b64.DecodeString(e.Ciphertext); err != nil {
		return nil, fmt.Errorf("mlkem: ciphertext is not base64url: %w", spec.ErrUnsupported)
	}
	return p, nil
}

// Open decrypts a parsed entry with dk. Not this key's (the unwrapped CEK
// fails AES-KW's integrity check; ML-KEM's implicit rejection makes a
// tampered ek look the same): spec.ErrNoKey. The key unwraps but the
// payload does not authenticate (tampered header, iv, ciphertext or tag):
// spec.ErrIntegrity.
func (p *Parsed) Open(dk *mlkem.DecapsulationKey768) ([]byte, error) {
	shared, err := dk.Decapsulate(p.ek)
	if err != nil {
		return nil, fmt.Errorf("mlkem: %v: %w", err, spec.ErrUnsupported)
	}
	kwk := kdf(shared, Algorithm, kwkLen)
	clear(shared)
	defer clear(kwk)
	kw, err := aes.NewCipher(kwk)
	if err != nil {
		return nil, err
	}
	cek, err := josecipher.KeyUnwrap(kw, p.wrapped)
	if err != nil || len(cek) != cekLen {
		return nil, fmt.Errorf("mlkem: this key is not a recipient: %w", spec.ErrNoKey)
	}
	defer clear(cek)
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, p.iv, append(bytes.Clone(p.ciphertext), p.tag...), []byte(p.protected))
	if err != nil {
		return nil, fmt.Errorf("mlkem: entry does not authenticate under its key: %w", spec.ErrIntegrity)
	}
	return pt, nil
}

// Unwrapper opens entries with ML-KEM-768 private keys.
type Unwrapper struct{ keys []*mlkem.DecapsulationKey768 }

// NewUnwrapper returns an unwrapper trying keys in order.
func NewUnwrapper(keys ...*mlkem.DecapsulationKey768) (*Unwrapper, error) {
	if len(keys) == 0 {
		return nil, errors.New("mlkem: no keys")
	}
	return &Unwrapper{keys: keys}, nil
}

// Scheme is the annotation suffix ("jwe").
func (u *Unwrapper) Scheme() string { return Scheme }

// Unwrap opens an entry. A jwe entry of another algorithm, or one no key
// opens: spec.ErrNoKey; a malformed one: spec.ErrUnsupported; one whose
// key unwraps but whose payload does not authenticate: spec.ErrIntegrity.
func (u *Unwrapper) Unwrap(ctx context.Context, data []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, err
	}
	for _, k := range u.keys {
		pt, err := p.Open(k)
		if errors.Is(err, spec.ErrNoKey) {
			continue
		}
		return pt, err
	}
	return nil, fmt.Errorf("mlkem: none of the %d given ML-KEM key(s) is a recipient: %w", len(u.keys), spec.ErrNoKey)
}

// Describe lists an entry's recipient: "alg=ML-KEM-768+A192KW enc=A256GCM
// [kid=…]", as package jwe describes its entries. ok is false for a jwe
// entry of another algorithm.
func Describe(data []byte) (lines []string, ok bool, err error) {
	p, err := Parse(data)
	if errors.Is(err, ErrNotThisScheme) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	line := "alg=" + Algorithm + " enc=" + enc
	if p.KID != "" {
		line += " kid=" + printable(p.KID)
	}
	return []string{line}, true, nil
}

func printable(s string) string { return bounded.Printable(s, 0) }
