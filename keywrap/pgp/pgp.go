// Package pgp wraps layer options in a binary OpenPGP message (AES-256,
// SHA-256, no compression, unsigned), the structure ocicrypt writes, using
// key files instead of a gpg keyring.
package pgp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
)

var (
	_ keywrap.Wrapper   = (*Wrapper)(nil)
	_ keywrap.Unwrapper = (*Unwrapper)(nil)
)

// Scheme is the annotation suffix of this wrapper.
const Scheme = "pgp"

// maxEntry bounds the size of an entry and of its decrypted content.
const maxEntry = 1 << 20

func config() *packet.Config {
	return &packet.Config{
		Rand:              rand.Reader,
		DefaultHash:       crypto.SHA256,
		DefaultCipher:     packet.CipherAES256,
		CompressionConfig: &packet.CompressionConfig{Level: 0},
	}
}

// Wrapper produces one OpenPGP message for a fixed set of public keys.
type Wrapper struct {
	to openpgp.EntityList
}

// NewWrapper checks that every entity has a valid encryption key.
func NewWrapper(to openpgp.EntityList) (*Wrapper, error) {
	if len(to) == 0 {
		return nil, errors.New("pgp: no recipients")
	}
	now := config().Now()
	for _, e := range to {
		if _, ok := e.EncryptionKey(now); !ok {
			return nil, fmt.Errorf("pgp recipient %s has no valid encryption key (expired, revoked or signing-only): %w",
				KeyID(e.PrimaryKey.KeyId), spec.ErrUnsupported)
		}
	}
	return &Wrapper{to: to}, nil
}

// Scheme returns "pgp".
func (w *Wrapper) Scheme() string { return Scheme }

// Wrap encrypts privopts to every recipient in one binary message.
func (w *Wrapper) Wrap(ctx context.Context, privopts []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	pw, err := openpgp.Encrypt(&buf, w.to, nil, nil, config())
	if err != nil {
		return nil, fmt.Errorf("pgp: encrypting: %w", err)
	}
	if _, err := pw.Write(privopts); err != nil {
		return nil, fmt.Errorf("pgp: encrypting: %w", err)
	}
	if err := pw.Close(); err != nil {
		return nil, fmt.Errorf("pgp: encrypting: %w", err)
	}
	return buf.Bytes(), nil
}

// Unwrapper opens pgp entries with OpenPGP secret keys.
type Unwrapper struct {
	keys openpgp.EntityList
}

// NewUnwrapper takes entities whose secret keys are already decrypted (see
// keys.ParseMaterial, which applies the passphrase).
func NewUnwrapper(secret openpgp.EntityList) (*Unwrapper, error) {
	for _, e := range secret {
		if e.PrivateKey == nil {
			return nil, fmt.Errorf("pgp key %s has no secret key", KeyID(e.PrimaryKey.KeyId))
		}
	}
	return &Unwrapper{keys: secret}, nil
}

// Scheme returns "pgp".
func (u *Unwrapper) Scheme() string { return Scheme }

// Unwrap decrypts a pgp entry. No secret key for any of its recipients: an
// error wrapping spec.ErrNoKey; a failed integrity check: spec.ErrIntegrity.
func (u *Unwrapper) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := recipientIDs(entry); err != nil {
		return nil, err
	}
	prompt := func([]openpgp.Key, bool) ([]byte, error) {
		// Keys are decrypted when loaded; asking again means no usable key.
		return nil, pgperrors.ErrKeyIncorrect
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(entry), u.keys, prompt, config())
	if err != nil {
		if errors.Is(err, pgperrors.ErrKeyIncorrect) {
			return nil, fmt.Errorf("pgp: none of the given secret keys is a recipient: %w", spec.ErrNoKey)
		}
		return nil, fmt.Errorf("pgp: reading message: %v: %w", err, spec.ErrIntegrity)
	}
	pt, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, maxEntry+1))
	if err != nil {
		return nil, fmt.Errorf("pgp: decrypting: %v: %w", err, spec.ErrIntegrity)
	}
	if len(pt) > maxEntry {
		return nil, fmt.Errorf("pgp: decrypted content too large: %w", spec.ErrIntegrity)
	}
	// Reading to EOF checked the MDC (or AEAD tag); anything else is an error.
	return pt, nil
}

// KeyID formats a key ID the way gpg prints it (16 upper-case hex digits).
func KeyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// recipientIDs returns the key IDs of the public-key encrypted session key
// packets before the encrypted data.
func recipientIDs(entry []byte) ([]uint64, error) {
	if len(entry) > maxEntry {
		return nil, fmt.Errorf("pgp entry of %d bytes is too large: %w", len(entry), spec.ErrUnsupported)
	}
	r := packet.NewReader(bytes.NewReader(entry))
	var ids []uint64
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parsing pgp entry: %v: %w", err, spec.ErrUnsupported)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			ids = append(ids, p.KeyId)
			continue
		case *packet.SymmetricallyEncrypted, *packet.AEADEncrypted:
		default:
			return nil, fmt.Errorf("parsing pgp entry: unexpected %T packet: %w", p, spec.ErrUnsupported)
		}
		break
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("parsing pgp entry: no public-key encrypted session key: %w", spec.ErrUnsupported)
	}
	return ids, nil
}

// Describe lists the recipient key IDs of a pgp entry, one per line
// ("keyid" and 16 upper-case hex digits, as gpg --list-packets prints it;
// 0000000000000000 is a hidden recipient).
func Describe(entry []byte) ([]string, error) {
	ids, err := recipientIDs(entry)
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(ids))
	for _, id := range ids {
		lines = append(lines, "keyid "+KeyID(id))
	}
	return lines, nil
}
