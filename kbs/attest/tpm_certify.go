package attest

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"math/big"
)

// Bounds on a certified TPM binding key, checked before parsing.
const (
	MaxTPMPublic      = 1 << 10 // TPMT_PUBLIC of an RSA key up to 4096 bits
	MaxTPMCertifyInfo = 1 << 10 // TPMS_ATTEST of TPM2_Certify
)

// TPM 2.0 constants of binding keys (TPM 2.0 Part 2).
const (
	tpmSTAttestCertify = 0x8017
	tpmAlgRSA          = 0x0001
	tpmAlgNull         = 0x0010
	tpmAlgOAEP         = 0x0017

	tpmAttrFixedTPM            = 1 << 1
	tpmAttrFixedParent         = 1 << 4
	tpmAttrSensitiveDataOrigin = 1 << 5
	tpmAttrRestricted          = 1 << 16
	tpmAttrDecrypt             = 1 << 17
	tpmAttrSign                = 1 << 18
)

// VerifyTPMBindingKey checks a TPM binding key and its certification, and
// returns the key. public is the key's TPMT_PUBLIC; certifyInfo the
// TPMS_ATTEST of TPM2_Certify over it and signature the TPMT_SIGNATURE of
// that by the AK whose std base64 PKIX DER is akPublic (the ak_public
// claim of a verified tpm attestation); extraData is what the
// certification's qualifying data must be (the attestation's report data).
//
// The key must be RSA (2048 to 4096 bits), decrypt-only (decrypt set;
// sign and restricted clear), fixedTPM, fixedParent and generated inside
// the TPM (sensitiveDataOrigin), with nameAlg SHA-256, no symmetric
// algorithm and a NULL or OAEP-SHA-256 scheme; the certification must name
// exactly that public area (name = 0x000b || SHA-256(public)). Failures
// wrap spec.ErrUnsupported (malformed) or spec.ErrIntegrity (a signature,
// name or qualifying data that does not match).
func VerifyTPMBindingKey(akPublic string, public, certifyInfo, signature, extraData []byte) (*rsa.PublicKey, error) {
	if len(public) > MaxTPMPublic || len(certifyInfo) > MaxTPMCertifyInfo || len(signature) > MaxTPMSignature {
		return nil, tpmUnsupported("binding key: public %d, certify info %d, signature %d bytes exceed %d/%d/%d",
			len(public), len(certifyInfo), len(signature), MaxTPMPublic, MaxTPMCertifyInfo, MaxTPMSignature)
	}
	akDER, err := tpmBase64("ak_public", akPublic, MaxTPMAKPublic)
	if err != nil {
		return nil, err
	}
	ak, err := tpmAK(akDER)
	if err != nil {
		return nil, err
	}
	key, err := parseBindingPublic(public)
	if err != nil {
		return nil, err
	}
	name, extra, err := parseTPMCertify(certifyInfo)
	if err != nil {
		return nil, err
	}
	if err := verifyTPMSignature(ak, certifyInfo, signature); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(public)
	want := append([]byte{0x00, tpmAlgSHA256}, sum[:]...)
	if !bytes.Equal(name, want) {
		return nil, tpmIntegrity("the certification names another key than the binding key sent")
	}
	if subtle.ConstantTimeCompare(extra, extraData) != 1 {
		return nil, tpmIntegrity("the certification's qualifying data is not this attestation's report data (replayed?)")
	}
	return key, nil
}

// parseBindingPublic parses and checks a binding key's TPMT_PUBLIC.
func parseBindingPublic(b []byte) (*rsa.PublicKey, error) {
	r := &tpmReader{b: b}
	typ, nameAlg, attrs := r.u16(), r.u16(), r.u32()
	r.tpm2b("authPolicy", tpmMaxDigest)
	sym := r.u16()
	if r.err == nil && sym != tpmAlgNull {
		return nil, tpmUnsupported("binding key: symmetric algorithm %#x, want NULL (a decrypt-only key)", sym)
	}
	scheme := r.u16()
	if r.err == nil && scheme != tpmAlgNull {
		if h := r.u16(); r.err == nil && (scheme != tpmAlgOAEP || h != tpmAlgSHA256) {
			return nil, tpmUnsupported("binding key: scheme %#x/%#x, want NULL or OAEP with SHA-256", scheme, h)
		}
	}
	bits, exp := r.u16(), r.u32()
	n := r.tpm2b("RSA modulus", 512)
	if err := r.done(); err != nil {
		return nil, tpmUnsupported("binding key public area: %v", err)
	}
	switch {
	case typ != tpmAlgRSA:
		return nil, tpmUnsupported("binding key of type %#x, want RSA", typ)
	case nameAlg != tpmAlgSHA256:
		return nil, tpmUnsupported("binding key name algorithm %#x, want SHA-256", nameAlg)
	case attrs&(tpmAttrFixedTPM|tpmAttrFixedParent|tpmAttrSensitiveDataOrigin|tpmAttrDecrypt) != tpmAttrFixedTPM|tpmAttrFixedParent|tpmAttrSensitiveDataOrigin|tpmAttrDecrypt:
		return nil, tpmUnsupported("binding key attributes %#x: want fixedTPM, fixedParent, sensitiveDataOrigin and decrypt", attrs)
	case attrs&(tpmAttrSign|tpmAttrRestricted) != 0:
		return nil, tpmUnsupported("binding key attributes %#x: a binding key neither signs nor is restricted", attrs)
	case bits < 2048 || bits > 4096 || int(bits) != 8*len(n):
		return nil, tpmUnsupported("binding key of %d bits with a %d-byte modulus, want 2048 to 4096 bits", bits, len(n))
	}
	e := int(exp)
	if e == 0 {
		e = 65537
	}
	if e < 3 || e%2 == 0 {
		return nil, tpmUnsupported("binding key exponent %d", e)
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: e}
	if k.N.BitLen() != int(bits) {
		return nil, tpmUnsupported("binding key modulus of %d bits, declared %d", k.N.BitLen(), bits)
	}
	return k, nil
}

// parseTPMCertify parses a TPMS_ATTEST that must be a certification and
// returns the certified name and the qualifying data.
func parseTPMCertify(msg []byte) (name, extra []byte, err error) {
	r := &tpmReader{b: msg}
	if magic := r.u32(); r.err == nil && magic != tpmGeneratedValue {
		return nil, nil, tpmUnsupported("certify info magic %#x is not TPM_GENERATED_VALUE", magic)
	}
	if typ := r.u16(); r.err == nil && typ != tpmSTAttestCertify {
		return nil, nil, tpmUnsupported("certify info type %#x is not TPM_ST_ATTEST_CERTIFY", typ)
	}
	r.tpm2b("qualifiedSigner", tpmMaxName)
	extra = r.tpm2b("extraData", tpmMaxDigest)
	r.next(8 + 4 + 4 + 1) // clockInfo
	r.next(8)             // firmwareVersion
	name = r.tpm2b("name", tpmMaxName)
	r.tpm2b("qualifiedName", tpmMaxName)
	if err := r.done(); err != nil {
		return nil, nil, tpmUnsupported("certify info: %v", err)
	}
	return name, extra, nil
}
