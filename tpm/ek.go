package tpm

import (
	"context"
	"crypto"
	"fmt"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/coffer-dev/coffer/spec"
)

// maxEKCert bounds the EK certificate read from NV.
const maxEKCert = 4 << 10

// EKCertificate returns the DER certificate of the TPM's RSA EK, from the
// NV index the TCG EK credential profile assigns it (0x01C00002), where
// swtpm_setup --create-ek-cert writes it.
func (t *TPM) EKCertificate(ctx context.Context) ([]byte, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	der, err := tpm2.NVReadEx(t.rw, tpmutil.Handle(client.EKCertNVIndexRSA), tpm2.HandleOwner, "", 0)
	if err != nil {
		return nil, cmdErr(ctx, "reading the EK certificate (was the TPM provisioned with one?)", err)
	}
	if len(der) > maxEKCert {
		return nil, fmt.Errorf("tpm: EK certificate of %d bytes: %w", len(der), spec.ErrUnsupported)
	}
	// NV indexes are sized up front: DER knows its own length.
	if len(der) > 4 && der[0] == 0x30 && der[1] == 0x82 {
		if n := 4 + (int(der[2])<<8 | int(der[3])); n <= len(der) {
			der = der[:n]
		}
	}
	return der, nil
}

// AKTPMPublic returns the AK's TPMT_PUBLIC as the TPM marshals it: what a
// verifier hashes into the AK's name for credential activation.
func (t *TPM) AKTPMPublic(ctx context.Context) ([]byte, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadAK(ctx); err != nil {
		return nil, err
	}
	return t.ak.PublicArea().Encode()
}

// ActivateCredential recovers the secret a verifier sealed to this TPM's
// EK and the AK's name (TPM2_MakeCredential, done in software by the
// verifier): the TPM releases it only when the EK is its own and an object
// with that name is loaded in it, which proves the AK lives in the TPM
// the EK certificate vouches for. credBlob is the TPM2B_ID_OBJECT and
// encSecret the TPM2B_ENCRYPTED_SECRET, both with their size prefixes.
func (t *TPM) ActivateCredential(ctx context.Context, credBlob, encSecret []byte) ([]byte, error) {
	if len(credBlob) < 2 || len(encSecret) < 2 {
		return nil, fmt.Errorf("tpm: credential blob or encrypted secret without its size: %w", spec.ErrUnsupported)
	}
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadAK(ctx); err != nil {
		return nil, err
	}
	ek, err := client.NewKey(t.rw, tpm2.HandleEndorsement, client.DefaultEKTemplateRSA())
	if err != nil {
		return nil, cmdErr(ctx, "loading the EK", err)
	}
	defer ek.Close()
	// The EK's policy is PolicySecret(endorsement hierarchy).
	sess, _, err := tpm2.StartAuthSession(t.rw, tpm2.HandleNull, tpm2.HandleNull, make([]byte, 16), nil,
		tpm2.SessionPolicy, tpm2.AlgNull, tpm2.AlgSHA256)
	if err != nil {
		return nil, cmdErr(ctx, "starting the EK policy session", err)
	}
	defer tpm2.FlushContext(t.rw, sess)
	if _, _, err := tpm2.PolicySecret(t.rw, tpm2.HandleEndorsement,
		tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession},
		sess, nil, nil, nil, 0); err != nil {
		return nil, cmdErr(ctx, "satisfying the EK policy", err)
	}
	secret, err := tpm2.ActivateCredentialUsingAuth(t.rw, []tpm2.AuthCommand{
		{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession},
		{Session: sess, Attributes: tpm2.AttrContinueSession},
	}, t.ak.Handle(), ek.Handle(), credBlob[2:], encSecret[2:])
	if err != nil {
		return nil, cmdErr(ctx, "activating the credential", err)
	}
	return secret, nil
}

// EKPublic returns the public key of the TPM's RSA EK (the TCG default
// template), the key an EK certificate certifies.
func (t *TPM) EKPublic(ctx context.Context) (crypto.PublicKey, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	ek, err := client.NewKey(t.rw, tpm2.HandleEndorsement, client.DefaultEKTemplateRSA())
	if err != nil {
		return nil, cmdErr(ctx, "loading the EK", err)
	}
	defer ek.Close()
	return ek.PublicKey(), nil
}
