package imagepolicy

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/coffer-dev/coffer/spec"
)

type gpgVerifier struct{ ring openpgp.EntityList }

// newGPGVerifier reads OpenPGP public keyrings (armored or binary), as
// signedBy's keyPath / keyData hold them.
func newGPGVerifier(raw [][]byte) (*gpgVerifier, error) {
	v := &gpgVerifier{}
	for _, k := range raw {
		if len(k) > maxKeySize {
			return nil, fmt.Errorf("GPG keyring: too large: %w", spec.ErrUnsupported)
		}
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(k))
		if err != nil {
			if el, err = openpgp.ReadKeyRing(bytes.NewReader(k)); err != nil {
				return nil, fmt.Errorf("GPG keyring: %v: %w", err, spec.ErrUnsupported)
			}
		}
		v.ring = append(v.ring, el...)
	}
	return v, nil
}

// VerifySignature reads a signed (not detached) OpenPGP message, as
// containers/image's simple signing writes it, and returns its payload
// once the signature verifies with a key of the ring.
func (v *gpgVerifier) VerifySignature(s Signature) ([]byte, error) {
	md, err := openpgp.ReadMessage(bytes.NewReader(s.Payload), v.ring, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("GPG signature: %v: %w", err, spec.ErrIntegrity)
	}
	if !md.IsSigned || md.IsEncrypted {
		return nil, fmt.Errorf("GPG signature: not a signed message: %w", spec.ErrIntegrity)
	}
	payload, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, maxPayload+1))
	if err != nil {
		return nil, fmt.Errorf("GPG signature: %v: %w", err, spec.ErrIntegrity)
	}
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("GPG signature: payload larger than %d: %w", maxPayload, spec.ErrUnsupported)
	}
	// The signature is checked once the body has been read.
	if md.SignatureError != nil || md.SignedBy == nil {
		return nil, fmt.Errorf("GPG signature by key %X does not verify with the policy's keys: %v: %w", md.SignedByKeyId, md.SignatureError, spec.ErrIntegrity)
	}
	return payload, nil
}

// lookasideSignatures reads simple signing signatures from the lookaside
// location the checker was given (WithLookaside).
func lookasideSignatures(ctx context.Context, img Image) ([]Signature, error) {
	if img.lookaside == "" {
		return nil, fmt.Errorf("signedBy needs a signature lookaside location (--signature-lookaside): %w", spec.ErrPolicyDenied)
	}
	return readLookaside(ctx, img.lookaside, img.Ref, img.Digest)
}
