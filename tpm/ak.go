package tpm

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/coffer-dev/coffer/spec"
)

// AKPublic returns the AK's public key as PKIX DER (what the evidence's
// ak_public carries, base64-encoded).
func (t *TPM) AKPublic(ctx context.Context) ([]byte, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadAK(ctx); err != nil {
		return nil, err
	}
	return x509.MarshalPKIXPublicKey(t.ak.PublicKey())
}

// loadAK loads the AK once; t.mu is held.
func (t *TPM) loadAK(ctx context.Context) error {
	if t.ak != nil {
		return nil
	}
	if h := t.o.akHandle; h != 0 {
		k, err := client.LoadCachedKey(t.rw, tpmutil.Handle(h), nil)
		if err != nil {
			return cmdErr(ctx, fmt.Sprintf("loading the AK at %#x", h), err)
		}
		if err := quotingKey(k.PublicArea()); err != nil {
			return fmt.Errorf("tpm key at %#x: %w", h, err)
		}
		t.ak = k
		return nil
	}
	// CoCo's provisioned AK, when there is one.
	if pub, _, _, err := tpm2.ReadPublic(t.rw, tpmutil.Handle(CoCoAKHandle)); err == nil && quotingKey(pub) == nil {
		if k, err := client.LoadCachedKey(t.rw, tpmutil.Handle(CoCoAKHandle), nil); err == nil {
			t.ak = k
			return nil
		}
	} else if ctx.Err() != nil {
		return cmdErr(ctx, "reading the AK", ctx.Err())
	}
	k, err := client.NewKey(t.rw, tpm2.HandleEndorsement, client.AKTemplateRSA())
	if err != nil {
		return cmdErr(ctx, "creating the AK", err)
	}
	t.ak = k
	return nil
}

// quotingKey checks that pub is a key a verifier can trust a quote from: a
// restricted signing key that never leaves the TPM (a restricted key refuses
// to sign data that starts like a TPM-generated structure, so whatever it
// signs that looks like a quote is one), with RSASSA or ECDSA over SHA-256.
func quotingKey(pub tpm2.Public) error {
	const need = tpm2.FlagSign | tpm2.FlagRestricted | tpm2.FlagFixedTPM
	if pub.Attributes&need != need || pub.Attributes&tpm2.FlagDecrypt != 0 {
		return fmt.Errorf("not a restricted, fixedTPM signing key (attributes %#x): %w", uint32(pub.Attributes), spec.ErrUnsupported)
	}
	var scheme *tpm2.SigScheme
	switch {
	case pub.Type == tpm2.AlgRSA && pub.RSAParameters != nil:
		scheme = pub.RSAParameters.Sign
		if scheme != nil && scheme.Alg != tpm2.AlgRSASSA {
			scheme = nil
		}
	case pub.Type == tpm2.AlgECC && pub.ECCParameters != nil:
		scheme = pub.ECCParameters.Sign
		if scheme != nil && scheme.Alg != tpm2.AlgECDSA {
			scheme = nil
		}
	}
	if scheme == nil || scheme.Hash != tpm2.AlgSHA256 {
		return fmt.Errorf("signing scheme is not RSASSA or ECDSA with SHA-256: %w", spec.ErrUnsupported)
	}
	return nil
}
