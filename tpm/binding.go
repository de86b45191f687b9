package tpm

import (
	"context"
	"crypto/rsa"
	"fmt"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/coffer-dev/coffer/spec"
)

// OAEPLabel is the OAEP label of keys wrapped to a binding key: SecL's KBS
// wraps with RSA-OAEP SHA-256 and the label "TPM2\0"; go-tpm appends the
// terminating zero itself.
const OAEPLabel = "TPM2"

// bindingTemplate is the binding key: RSA-2048, decrypt only (no signing),
// fixedTPM and fixedParent (it cannot leave this TPM or be duplicated),
// generated inside the TPM, usable without a password, OAEP with SHA-256.
// It is not restricted: a restricted decryption key is a storage parent
// and refuses TPM2_RSA_Decrypt. As a primary key of the endorsement
// hierarchy (where the AK lives) it is derived from the seed and the
// template, so the same TPM gives the same binding key every time and
// nothing is written to its NV memory.
var bindingTemplate = tpm2.Public{
	Type:    tpm2.AlgRSA,
	NameAlg: tpm2.AlgSHA256,
	Attributes: tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin |
		tpm2.FlagUserWithAuth | tpm2.FlagNoDA | tpm2.FlagDecrypt,
	RSAParameters: &tpm2.RSAParams{
		Sign:    &tpm2.SigScheme{Alg: tpm2.AlgOAEP, Hash: tpm2.AlgSHA256},
		KeyBits: 2048,
	},
}

// BindingKey is the TPM binding key's public area and its certification
// by the AK.
type BindingKey struct {
	// Public is the key's TPMT_PUBLIC as the TPM returned it; its name is
	// its SHA-256 prefixed with the algorithm id 0x000b.
	Public []byte
	// CertifyInfo is the TPMS_ATTEST of TPM2_Certify (type
	// TPM_ST_ATTEST_CERTIFY) naming the key, signed by the AK.
	CertifyInfo []byte
	// Signature is the AK's TPMT_SIGNATURE over CertifyInfo.
	Signature []byte
	// Key is the RSA public key.
	Key *rsa.PublicKey
}

// loadBinding creates (or re-derives) the binding key once; t.mu is held.
func (t *TPM) loadBinding(ctx context.Context) error {
	if t.bind != 0 {
		return nil
	}
	h, pub, _, _, _, _, err := tpm2.CreatePrimaryEx(t.rw, tpm2.HandleEndorsement, tpm2.PCRSelection{}, "", "", bindingTemplate)
	if err != nil {
		return cmdErr(ctx, "creating the binding key", err)
	}
	p, err := tpm2.DecodePublic(pub)
	if err != nil {
		tpm2.FlushContext(t.rw, h)
		return fmt.Errorf("tpm binding key: %w", err)
	}
	k, err := p.Key()
	rk, ok := k.(*rsa.PublicKey)
	if err != nil || !ok {
		tpm2.FlushContext(t.rw, h)
		return fmt.Errorf("tpm binding key is not RSA (%v): %w", err, spec.ErrUnsupported)
	}
	t.bind, t.bindPublic, t.bindKey = h, pub, rk
	return nil
}

// CertifyBindingKey returns the binding key certified by the AK with
// TPM2_Certify, qualifyingData (at most 64 bytes) in the attestation's
// extraData. A verifier that checks the certification against an AK it
// trusts knows the key lives in the same TPM and cannot leave it.
func (t *TPM) CertifyBindingKey(ctx context.Context, qualifyingData []byte) (*BindingKey, error) {
	if len(qualifyingData) > 64 {
		return nil, fmt.Errorf("tpm certify: %d bytes of qualifying data, at most 64: %w", len(qualifyingData), spec.ErrUnsupported)
	}
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadAK(ctx); err != nil {
		return nil, err
	}
	if err := t.loadBinding(ctx); err != nil {
		return nil, err
	}
	info, sig, err := tpm2.CertifyEx(t.rw, "", "", t.bind, t.ak.Handle(), qualifyingData, tpm2.SigScheme{Alg: tpm2.AlgNull})
	if err != nil {
		return nil, cmdErr(ctx, "certifying the binding key", err)
	}
	return &BindingKey{Public: append([]byte(nil), t.bindPublic...), CertifyInfo: info, Signature: sig, Key: t.bindKey}, nil
}

// Unbind decrypts wrapped (RSA-OAEP SHA-256, label "TPM2\0", to the
// binding key) inside the TPM and returns the plaintext. Data wrapped to
// another TPM's binding key fails here.
func (t *TPM) Unbind(ctx context.Context, wrapped []byte) ([]byte, error) {
	if len(wrapped) != 256 {
		return nil, fmt.Errorf("tpm unbind: %d bytes, want 256 (RSA-2048): %w", len(wrapped), spec.ErrIntegrity)
	}
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadBinding(ctx); err != nil {
		return nil, err
	}
	pt, err := tpm2.RSADecrypt(t.rw, t.bind, "", wrapped, &tpm2.AsymScheme{Alg: tpm2.AlgOAEP, Hash: tpm2.AlgSHA256}, OAEPLabel)
	if err != nil {
		if ctx.Err() != nil {
			return nil, cmdErr(ctx, "unbinding", err)
		}
		return nil, fmt.Errorf("tpm unbind: the TPM refused to decrypt (wrapped for another TPM's binding key?): %v: %w", err, spec.ErrNoKey)
	}
	return pt, nil
}

// BindingPublic returns the binding key's public key (creating the key in
// the TPM on first use).
func (t *TPM) BindingPublic(ctx context.Context) (*rsa.PublicKey, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadBinding(ctx); err != nil {
		return nil, err
	}
	return t.bindKey, nil
}
