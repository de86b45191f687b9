package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"fmt"
	"io"
	"strings"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
)

// Signer is a private key on a token as a crypto.Signer: Ed25519
// (CKM_EDDSA, signing the whole message, opts.HashFunc() 0) or ECDSA
// (CKM_ECDSA over a digest, the signature ASN.1 DER as crypto/ecdsa returns
// it). The key never leaves the token; each Sign opens a logged-in session
// of its own (module loaded, PIN given, session closed again), so a Signer
// holds no token state between calls and survives a token restart.
type Signer struct {
	cfg Config
	k   *Key
	pub crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey
}

// NewSigner opens the token once to check the PIN and find the private
// key and its public key object (same object=/id=), whose key it reads:
// Ed25519 or ECDSA on P-256, P-384 or P-521. Errors name the token and the
// object, never the PIN.
func NewSigner(cfg Config, k *Key) (*Signer, error) {
	pub, err := tokenPublicKey(cfg, k)
	if err != nil {
		return nil, err
	}
	return &Signer{cfg: cfg, k: k, pub: pub}, nil
}

// Public is the key's public half: ed25519.PublicKey or *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// String is the key's URI without its query (no PIN).
func (s *Signer) String() string { return s.k.String() }

// Sign signs on the token: the message itself for an Ed25519 key (pure
// Ed25519: no context, no prehash), else a digest of opts.HashFunc()'s size.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	switch s.pub.(type) {
	case ed25519.PublicKey:
		if o, ok := opts.(*ed25519.Options); ok && (o.Context != "" || o.Hash != 0) {
			return nil, fmt.Errorf("pkcs11: key %s: only pure Ed25519 (no context, no prehash): %w", s.k, spec.ErrUnsupported)
		}
		if opts.HashFunc() != 0 {
			return nil, fmt.Errorf("pkcs11: key %s: Ed25519 signs the message, not a %v digest: %w", s.k, opts.HashFunc(), spec.ErrUnsupported)
		}
		return tokenSign(s.cfg, s.k, false, digest)
	case *ecdsa.PublicKey:
		if h := opts.HashFunc(); h == 0 || len(digest) != h.Size() {
			return nil, fmt.Errorf("pkcs11: key %s: ECDSA signs a digest of opts.HashFunc()'s size: %w", s.k, spec.ErrUnsupported)
		}
		return tokenSign(s.cfg, s.k, true, digest)
	}
	return nil, fmt.Errorf("pkcs11: key %s: unsupported key type %T: %w", s.k, s.pub, spec.ErrUnsupported)
}

// KeyFromURI is the key an RFC 7512 pkcs11: URI names directly (ParseURI's
// rules), with no module environment: the module reads coffer's own
// (SOFTHSM2_CONF, say).
func KeyFromURI(uri string) (*Key, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return &Key{uri: u}, nil
}

// LoadKey resolves a key argument: a pkcs11: URI is the key itself; else
// ref is a file, read up to max bytes, and a pkcs11 key file there is
// parsed (ParseKeyFile). Any other file yields a nil Key and its contents,
// for the caller's own parser (a PEM key, say).
func LoadKey(ref string, max int64) (*Key, []byte, error) {
	if strings.HasPrefix(ref, "pkcs11:") {
		k, err := KeyFromURI(ref)
		return k, nil, err
	}
	data, err := bounded.ReadFile(ref, max)
	if err != nil {
		return nil, nil, err
	}
	if !IsKeyFile(data) {
		return nil, data, nil
	}
	k, err := ParseKeyFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	return k, nil, nil
}
