// Package flavor is the Intel SecL-DC image flavor: the owner's signed
// statement that an image is encrypted, with which broker key (key_url)
// and, for a file image, the digest of the encrypted file. The JSON shape
// is SecL's (pkg/model/wls: flavor.meta.id, meta.description.label and
// flavor_part, encryption_required, encryption.key_url and digest,
// integrity_enforced, integrity.notary_url), wrapped as SecL's signed
// flavor {"flavor":{…},"signature":"<std base64>"}.
//
// Where coffer differs from SecL:
//   - The signature covers the RFC 8785 (JCS) canonical serialization of the
//     "flavor" member, so re-indenting a flavor does not break it. A flavor
//     signed the SecL way (over the compact bytes Go's encoding/json wrote)
//     verifies too, because Verify also accepts a signature over the raw
//     member bytes exactly as they arrive; either way the flavor returned is
//     parsed from the bytes the signature covers.
//   - Verify refuses unsigned flavors and flavors signed by a key that is
//     not one of the configured signer certificates (SecL's workload service
//     stores unsigned flavors).
//   - RSA signers sign PKCS#1 v1.5 with SHA-384 (SecL's algorithm, RSA-3072
//     in its deployments); ECDSA (P-256, P-384) signers sign SHA-384 ASN.1
//     signatures; Ed25519 signers sign the bytes themselves.
package flavor

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/coffer-dev/coffer/internal/pemcert"
	"os"
	"regexp"

	"github.com/google/uuid"

	"github.com/coffer-dev/coffer/jcs"
	"github.com/coffer-dev/coffer/spec"
)

// Flavor parts.
const (
	PartImage          = "IMAGE"
	PartContainerImage = "CONTAINER_IMAGE"
)

// Bounds checked before parsing.
const (
	// MaxSignedFlavor bounds a signed flavor document.
	MaxSignedFlavor = 64 << 10
	// MaxSignature bounds the decoded signature (RSA-8192 is 1 KiB).
	MaxSignature = 1 << 10
	maxDepth     = 8
)

// Flavor is SecL's image flavor (the "flavor" member).
type Flavor struct {
	Meta               Meta        `json:"meta"`
	EncryptionRequired bool        `json:"encryption_required"`
	Encryption         *Encryption `json:"encryption,omitempty"`
	IntegrityEnforced  bool        `json:"integrity_enforced"`
	Integrity          *Integrity  `json:"integrity,omitempty"`
}

// Meta is the flavor's identity and description.
type Meta struct {
	ID          string       `json:"id"`
	Description *Description `json:"description"`
}

// Description labels the flavor.
type Description struct {
	FlavorPart string `json:"flavor_part,omitempty"`
	Label      string `json:"label,omitempty"`
}

// Encryption names the key and, for a file image, the encrypted file's digest.
type Encryption struct {
	// KeyURL is where the key is transferred from: for coffer's broker
	// <broker>/kbs/v1/keys/<uuid>/transfer, SecL's KBS path.
	KeyURL string `json:"key_url,omitempty"`
	// Digest is the standard base64 SHA-384 of the encrypted file (SHA-256
	// in flavors of older SecL WPMs).
	Digest string `json:"digest,omitempty"`
}

// Integrity is SecL's container-image integrity hint.
type Integrity struct {
	NotaryURL string `json:"notary_url,omitempty"`
}

// Signed is SecL's signed flavor document.
type Signed struct {
	Flavor    json.RawMessage `json:"flavor"`
	Signature string          `json:"signature"`
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ValidID reports whether id is a UUID in its canonical text form, the
// only flavor and image ids coffer accepts (they name files and URLs).
func ValidID(id string) bool { return uuidRE.MatchString(id) }

// New returns a flavor with a fresh random id.
func New(part, label, keyURL, digest string) (*Flavor, error) {
	id, err := uuid.NewRandom()
	if err != nil {
		return nil, err
	}
	f := &Flavor{
		Meta:               Meta{ID: id.String(), Description: &Description{FlavorPart: part, Label: label}},
		EncryptionRequired: keyURL != "",
	}
	if keyURL != "" {
		f.Encryption = &Encryption{KeyURL: keyURL, Digest: digest}
	}
	return f, f.Check()
}

// Check validates the fields coffer relies on.
func (f *Flavor) Check() error {
	if !ValidID(f.Meta.ID) {
		return fmt.Errorf("flavor: meta.id %q is not a UUID: %w", f.Meta.ID, spec.ErrUnsupported)
	}
	d := f.Meta.Description
	if d == nil || d.Label == "" {
		return fmt.Errorf("flavor %s: no meta.description.label: %w", f.Meta.ID, spec.ErrUnsupported)
	}
	if d.FlavorPart != PartImage && d.FlavorPart != PartContainerImage {
		return fmt.Errorf("flavor %s: flavor_part %q, want %s or %s: %w", f.Meta.ID, d.FlavorPart, PartImage, PartContainerImage, spec.ErrUnsupported)
	}
	if f.EncryptionRequired && (f.Encryption == nil || f.Encryption.KeyURL == "") {
		return fmt.Errorf("flavor %s: encryption_required without encryption.key_url: %w", f.Meta.ID, spec.ErrUnsupported)
	}
	if f.Encryption != nil && f.Encryption.Digest != "" {
		if b, err := base64.StdEncoding.DecodeString(f.Encryption.Digest); err != nil || (len(b) != sha512.Size384 && len(b) != 32) {
			return fmt.Errorf("flavor %s: encryption.digest is not a base64 SHA-384 (or SHA-256): %w", f.Meta.ID, spec.ErrUnsupported)
		}
	}
	return nil
}

// Sign returns the signed flavor document: the flavor in canonical form and
// signer's signature over exactly those bytes.
func Sign(f *Flavor, signer crypto.Signer) ([]byte, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	canon, err := jcs.CanonicalizeValue(f)
	if err != nil {
		return nil, err
	}
	sig, err := signBytes(signer, canon)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Signed{Flavor: canon, Signature: base64.StdEncoding.EncodeToString(sig)})
}

func signBytes(signer crypto.Signer, msg []byte) ([]byte, error) {
	switch signer.Public().(type) {
	case ed25519.PublicKey:
		return signer.Sign(rand.Reader, msg, crypto.Hash(0))
	case *rsa.PublicKey, *ecdsa.PublicKey:
		h := sha512.Sum384(msg)
		return signer.Sign(rand.Reader, h[:], crypto.SHA384)
	}
	return nil, fmt.Errorf("flavor signing key %T: want RSA, ECDSA or Ed25519: %w", signer.Public(), spec.ErrUnsupported)
}

func verifyBytes(pub crypto.PublicKey, msg, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *rsa.PublicKey:
		h := sha512.Sum384(msg)
		return rsa.VerifyPKCS1v15(k, crypto.SHA384, h[:], sig) == nil
	case *ecdsa.PublicKey:
		h := sha512.Sum384(msg)
		return ecdsa.VerifyASN1(k, h[:], sig)
	}
	return false
}

// Parse decodes a signed flavor document without verifying it: for
// inspection only. Use Verify before trusting anything in it.
func Parse(doc []byte) (*Signed, *Flavor, error) {
	if len(doc) > MaxSignedFlavor {
		return nil, nil, fmt.Errorf("flavor: document of %d bytes, at most %d: %w", len(doc), MaxSignedFlavor, spec.ErrUnsupported)
	}
	if err := checkDepth(doc, maxDepth); err != nil {
		return nil, nil, err
	}
	var s Signed
	if err := json.Unmarshal(doc, &s); err != nil {
		return nil, nil, fmt.Errorf("flavor: %v: %w", err, spec.ErrUnsupported)
	}
	if len(s.Flavor) == 0 || bytes.Equal(s.Flavor, []byte("null")) {
		return nil, nil, fmt.Errorf("flavor: no \"flavor\" member: %w", spec.ErrUnsupported)
	}
	f, err := decode(s.Flavor)
	if err != nil {
		return nil, nil, err
	}
	return &s, f, nil
}

func decode(raw []byte) (*Flavor, error) {
	var f Flavor
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("flavor: %v: %w", err, spec.ErrUnsupported)
	}
	if err := f.Check(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Verify checks a signed flavor document against the trusted signer
// certificates and returns the flavor the signature covers. It fails with
// spec.ErrIntegrity when the document is unsigned, signed by another key,
// or changed after signing.
func Verify(doc []byte, signers []*x509.Certificate) (*Flavor, error) {
	f, _, err := VerifyDoc(doc, signers)
	return f, err
}

// VerifyDoc is Verify that also returns the document to keep and serve:
// rebuilt from the flavor member the signature covers and the signature
// alone, so nothing else the uploaded bytes held (a second "flavor"
// member, unknown members) survives to mislead a reader.
func VerifyDoc(doc []byte, signers []*x509.Certificate) (*Flavor, []byte, error) {
	if len(signers) == 0 {
		return nil, nil, errors.New("flavor: no trusted flavor signer configured")
	}
	s, _, err := Parse(doc)
	if err != nil {
		return nil, nil, err
	}
	if s.Signature == "" {
		return nil, nil, fmt.Errorf("flavor: unsigned (coffer refuses unsigned flavors): %w", spec.ErrIntegrity)
	}
	if base64.StdEncoding.DecodedLen(len(s.Signature)) > MaxSignature+2 {
		return nil, nil, fmt.Errorf("flavor: signature longer than %d bytes: %w", MaxSignature, spec.ErrIntegrity)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return nil, nil, fmt.Errorf("flavor: signature is not standard base64: %w", spec.ErrIntegrity)
	}
	canon, err := jcs.Canonicalize(s.Flavor)
	if err != nil {
		return nil, nil, fmt.Errorf("flavor: %v: %w", err, spec.ErrIntegrity)
	}
	for _, c := range signers {
		var member []byte
		switch {
		case verifyBytes(c.PublicKey, canon, sig):
			member = canon
		case !bytes.Equal(canon, s.Flavor) && verifyBytes(c.PublicKey, s.Flavor, sig):
			member = s.Flavor // signed the SecL way, over the bytes as sent: keep them as sent
		default:
			continue
		}
		f, err := decode(member)
		if err != nil {
			return nil, nil, err
		}
		quoted, _ := json.Marshal(s.Signature)
		kept := make([]byte, 0, len(member)+len(quoted)+32)
		kept = append(append(append(append(kept, `{"flavor":`...), member...), `,"signature":`...), quoted...)
		return f, append(kept, '}'), nil
	}
	return nil, nil, fmt.Errorf("flavor %s: signature does not verify with any trusted flavor signer (modified, or signed by another key): %w", idOf(s.Flavor), spec.ErrIntegrity)
}

func idOf(raw []byte) string {
	var f struct {
		Meta struct {
			ID string `json:"id"`
		} `json:"meta"`
	}
	if json.Unmarshal(raw, &f) == nil && ValidID(f.Meta.ID) {
		return f.Meta.ID
	}
	return "(no valid id)"
}

// checkDepth fails when doc nests deeper than max, scanning linearly
// before any decoder sees it.
func checkDepth(doc []byte, max int) error {
	depth, inStr, esc := 0, false, false
	for _, c := range doc {
		switch {
		case esc:
			esc = false
		case inStr:
			if c == '\\' {
				esc = true
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			if depth++; depth > max {
				return fmt.Errorf("flavor: JSON nested deeper than %d: %w", max, spec.ErrUnsupported)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// LoadSigners reads PEM certificates (one or more per file).
func LoadSigners(paths ...string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("flavor signer certificate: %w", err)
		}
		certs, err := pemcert.Parse(b, 0)
		if err != nil {
			return nil, fmt.Errorf("flavor signer certificate %s: %w", p, err)
		}
		out = append(out, certs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("flavor signer certificate: no CERTIFICATE block in %v: %w", paths, spec.ErrUnsupported)
	}
	return out, nil
}
