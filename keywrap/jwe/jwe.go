// Package jwe wraps layer options in one JSON Web Encryption object for all
// jwe recipients, exactly as ocicrypt does: go-jose, RSA-OAEP for RSA keys,
// ECDH-ES+A256KW for EC keys (a JWK may name its own alg), content A256GCM,
// FullSerialize (flattened JSON for one recipient, general JSON for several).
package jwe

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // RSA-OAEP (SHA-1) through a crypto.Decrypter
	_ "crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
)

var (
	_ keywrap.Wrapper   = (*Wrapper)(nil)
	_ keywrap.Unwrapper = (*Unwrapper)(nil)
)

// Scheme is the annotation suffix of this wrapper.
const Scheme = "jwe"

// Key algorithms a recipient may use and an entry may carry.
var keyAlgorithms = []jose.KeyAlgorithm{
	jose.RSA_OAEP, jose.RSA_OAEP_256, jose.ECDH_ES_A128KW, jose.ECDH_ES_A192KW, jose.ECDH_ES_A256KW,
}

// Content encryptions an entry may carry (RFC 7518 §5.1).
var contentEncryptions = []jose.ContentEncryption{
	jose.A128CBC_HS256, jose.A192CBC_HS384, jose.A256CBC_HS512, jose.A128GCM, jose.A192GCM, jose.A256GCM,
}

// maxEntry bounds the size of an entry this package parses.
const maxEntry = 1 << 20

// Recipient is one public key to wrap for.
type Recipient struct {
	// Key is *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
	// Algorithm overrides the default key algorithm (a JWK's "alg"): one of
	// RSA-OAEP, RSA-OAEP-256, ECDH-ES+A128KW, ECDH-ES+A192KW, ECDH-ES+A256KW.
	// Empty: RSA-OAEP for RSA keys, ECDH-ES+A256KW for EC keys.
	Algorithm string
	// KeyID, if set, is written as the recipient's "kid" header.
	KeyID string
}

// Wrapper produces one JWE for a fixed set of recipients.
type Wrapper struct {
	recipients []jose.Recipient
}

// NewWrapper checks the recipients and returns their wrapper. An unusable
// key type or algorithm is an error wrapping spec.ErrUnsupported.
func NewWrapper(recipients []Recipient) (*Wrapper, error) {
	if len(recipients) == 0 {
		return nil, errors.New("jwe: no recipients")
	}
	w := &Wrapper{}
	for i, r := range recipients {
		var alg jose.KeyAlgorithm
		switch k := r.Key.(type) {
		case *rsa.PublicKey:
			alg = jose.RSA_OAEP
		case *ecdsa.PublicKey:
			if _, err := k.ECDH(); err != nil {
				return nil, fmt.Errorf("jwe recipient %d: EC curve %s cannot do ECDH: %w", i, k.Curve.Params().Name, spec.ErrUnsupported)
			}
			alg = jose.ECDH_ES_A256KW
		default:
			return nil, fmt.Errorf("jwe recipient %d: key type %T (need RSA or EC): %w", i, r.Key, spec.ErrUnsupported)
		}
		if r.Algorithm != "" {
			alg = jose.KeyAlgorithm(r.Algorithm)
			if !algFits(alg, r.Key) {
				return nil, fmt.Errorf("jwe recipient %d: key algorithm %q does not fit a %s key (accepted: RSA-OAEP, RSA-OAEP-256, ECDH-ES+A128KW, ECDH-ES+A192KW, ECDH-ES+A256KW): %w",
					i, r.Algorithm, keyKind(r.Key), spec.ErrUnsupported)
			}
		}
		w.recipients = append(w.recipients, jose.Recipient{Algorithm: alg, Key: r.Key, KeyID: r.KeyID})
	}
	return w, nil
}

func algFits(alg jose.KeyAlgorithm, k crypto.PublicKey) bool {
	switch k.(type) {
	case *rsa.PublicKey:
		return alg == jose.RSA_OAEP || alg == jose.RSA_OAEP_256
	case *ecdsa.PublicKey:
		return alg == jose.ECDH_ES_A128KW || alg == jose.ECDH_ES_A192KW || alg == jose.ECDH_ES_A256KW
	}
	return false
}

func keyKind(k crypto.PublicKey) string {
	switch k.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "EC"
	}
	return fmt.Sprintf("%T", k)
}

// Scheme returns "jwe".
func (w *Wrapper) Scheme() string { return Scheme }

// Wrap encrypts privopts for every recipient into one JWE (A256GCM) and
// returns its full JSON serialization.
func (w *Wrapper) Wrap(ctx context.Context, privopts []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	enc, err := jose.NewMultiEncrypter(jose.A256GCM, w.recipients, nil)
	if err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	obj, err := enc.Encrypt(privopts)
	if err != nil {
		return nil, fmt.Errorf("jwe: encrypting: %w", err)
	}
	return []byte(obj.FullSerialize()), nil
}

// Unwrapper decrypts jwe entries with private keys.
type Unwrapper struct {
	keys []any
}

// NewUnwrapper takes private keys: *rsa.PrivateKey, *ecdsa.PrivateKey, a
// *jose.JSONWebKey holding one of those, or any crypto.Decrypter with an
// RSA public key (an HSM or TPM key: RSA-OAEP is done through Decrypt).
// Other key types are an error wrapping spec.ErrUnsupported.
func NewUnwrapper(keys ...crypto.PrivateKey) (*Unwrapper, error) {
	u := &Unwrapper{}
	for i, k := range keys {
		switch k := k.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey:
			u.keys = append(u.keys, k)
		case *jose.JSONWebKey:
			switch k.Key.(type) {
			case *rsa.PrivateKey, *ecdsa.PrivateKey:
				u.keys = append(u.keys, k.Key)
			default:
				return nil, fmt.Errorf("jwe key %d: JWK key type %T: %w", i, k.Key, spec.ErrUnsupported)
			}
		case crypto.Decrypter:
			if _, ok := k.Public().(*rsa.PublicKey); !ok {
				return nil, fmt.Errorf("jwe key %d: decrypter with %T public key: %w", i, k.Public(), spec.ErrUnsupported)
			}
			u.keys = append(u.keys, opaqueRSA{k})
		default:
			return nil, fmt.Errorf("jwe key %d: key type %T (need RSA or EC): %w", i, k, spec.ErrUnsupported)
		}
	}
	return u, nil
}

// CanUse reports whether NewUnwrapper accepts k.
func CanUse(k crypto.PrivateKey) bool {
	_, err := NewUnwrapper(k)
	return err == nil
}

// Scheme returns "jwe".
func (u *Unwrapper) Scheme() string { return Scheme }

// Unwrap parses a JWE entry (full JSON or compact) and decrypts it with the
// first key that opens it. No fitting key: an error wrapping spec.ErrNoKey.
// A malformed entry or an unaccepted algorithm: spec.ErrUnsupported.
func (u *Unwrapper) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	obj, err := Parse(entry)
	if err != nil {
		if alg, ok := foreignAlg(entry); ok {
			// Another scheme's JWE (an ML-KEM recipient): skipped, as
			// ocicrypt skips entries it cannot open.
			return nil, fmt.Errorf("jwe: entry for alg %q, which these keys do not use: %w", alg, spec.ErrNoKey)
		}
		return nil, err
	}
	for _, k := range u.keys {
		_, _, pt, err := obj.DecryptMulti(k)
		if err == nil {
			return pt, nil
		}
	}
	return nil, fmt.Errorf("jwe: none of the %d given key(s) is a recipient: %w", len(u.keys), spec.ErrNoKey)
}

// Parse parses a JWE entry with the algorithms ocicrypt accepts.
func Parse(entry []byte) (*jose.JSONWebEncryption, error) {
	if len(entry) > maxEntry {
		return nil, fmt.Errorf("jwe entry of %d bytes is too large: %w", len(entry), spec.ErrUnsupported)
	}
	obj, err := jose.ParseEncrypted(string(entry), keyAlgorithms, contentEncryptions)
	if err != nil {
		return nil, fmt.Errorf("parsing jwe entry: %v: %w", err, spec.ErrUnsupported)
	}
	return obj, nil
}

// refusedAlgorithms are RFC 7518 key algorithms refused on purpose (RSA1_5's
// padding oracle; symmetric and password algorithms have no place in a
// public-key recipient): an entry using one is an error, not someone
// else's entry.
var refusedAlgorithms = []jose.KeyAlgorithm{
	jose.RSA1_5, jose.DIRECT, jose.ECDH_ES, jose.A128KW, jose.A192KW, jose.A256KW,
	jose.A128GCMKW, jose.A192GCMKW, jose.A256GCMKW, jose.PBES2_HS256_A128KW, jose.PBES2_HS384_A192KW, jose.PBES2_HS512_A256KW,
}

// foreignAlg reports the alg of a flattened-JSON entry when it is a JWE
// alg of another scheme (say ML-KEM-768+A192KW): neither accepted nor
// refused here.
func foreignAlg(entry []byte) (string, bool) {
	if len(entry) > maxEntry {
		return "", false
	}
	var raw struct {
		Protected string `json:"protected"`
	}
	if json.Unmarshal(entry, &raw) != nil {
		return "", false
	}
	alg, _ := decodeProtected(raw.Protected)["alg"].(string)
	for _, a := range slices.Concat(keyAlgorithms, refusedAlgorithms) {
		if string(a) == alg {
			return "", false
		}
	}
	return str(alg), alg != ""
}

// opaqueRSA does RSA-OAEP key unwrapping through a crypto.Decrypter.
type opaqueRSA struct{ d crypto.Decrypter }

func (o opaqueRSA) DecryptKey(encryptedKey []byte, h jose.Header) ([]byte, error) {
	var hash crypto.Hash
	switch jose.KeyAlgorithm(h.Algorithm) {
	case jose.RSA_OAEP:
		hash = crypto.SHA1
	case jose.RSA_OAEP_256:
		hash = crypto.SHA256
	default:
		return nil, fmt.Errorf("jwe: alg %q needs an RSA key", h.Algorithm)
	}
	return o.d.Decrypt(rand.Reader, encryptedKey, &rsa.OAEPOptions{Hash: hash})
}

// Describe lists the recipients of a jwe entry, one line each:
// "alg=RSA-OAEP enc=A256GCM kid=…" plus the EC curve for ECDH-ES.
func Describe(entry []byte) ([]string, error) {
	if _, err := Parse(entry); err != nil {
		return nil, err
	}
	trimmed := strings.TrimSpace(string(entry))
	var hdrs []map[string]any
	var shared map[string]any
	if strings.HasPrefix(trimmed, "{") {
		var raw struct {
			Protected  string         `json:"protected"`
			Header     map[string]any `json:"unprotected"`
			Recipients []struct {
				Header map[string]any `json:"header"`
			} `json:"recipients"`
			RecipientHeader map[string]any `json:"header"`
		}
		if err := json.Unmarshal([]byte(trimmed), &raw); err != nil {
			return nil, fmt.Errorf("parsing jwe entry: %w", spec.ErrUnsupported)
		}
		shared = mergeMaps(decodeProtected(raw.Protected), raw.Header)
		if len(raw.Recipients) == 0 {
			hdrs = append(hdrs, raw.RecipientHeader)
		}
		for _, r := range raw.Recipients {
			hdrs = append(hdrs, r.Header)
		}
	} else {
		shared = decodeProtected(strings.SplitN(trimmed, ".", 2)[0])
		hdrs = append(hdrs, nil)
	}
	lines := make([]string, 0, len(hdrs))
	for _, h := range hdrs {
		m := mergeMaps(shared, h)
		line := fmt.Sprintf("alg=%s enc=%s", str(m["alg"]), str(m["enc"]))
		if epk, ok := m["epk"].(map[string]any); ok {
			line += " epk=" + str(epk["crv"])
		}
		if _, ok := m["kid"].(string); ok {
			line += " kid=" + str(m["kid"])
		}
		lines = append(lines, line)
	}
	return lines, nil
}

func decodeProtected(s string) map[string]any {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func mergeMaps(a, b map[string]any) map[string]any {
	m := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

func str(v any) string {
	s, ok := v.(string)
	if !ok {
		return "-"
	}
	// Header values are attacker-controlled: keep the line printable.
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
