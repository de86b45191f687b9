//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/coffer-dev/coffer/spec"
)

// PKCS#11 3.0 names miekg/pkcs11 v1.1.2 lacks.
const (
	ckkECEdwards = 0x00000040 // CKK_EC_EDWARDS
	ckmEdDSA     = 0x00001057 // CKM_EDDSA
)

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// tokenPublicKey reads the public key of the key's pair: the private key's
// CKA_KEY_TYPE, then CKA_EC_PARAMS and CKA_EC_POINT of the public key object.
func tokenPublicKey(cfg Config, k *Key) (pub crypto.PublicKey, err error) {
	err = withToken(cfg, k, true, func(t *token) error {
		priv, err := t.find(p11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		attrs, err := t.c.GetAttributeValue(t.sh, priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_KEY_TYPE, nil)})
		if err != nil || len(attrs) != 1 {
			return fmt.Errorf("pkcs11: token %s: key type of private key %s: %s", k.token(), k.object(), rvName(err))
		}
		kt := uintValue(attrs[0].Value)
		if kt != p11.CKK_EC && kt != ckkECEdwards {
			return fmt.Errorf("pkcs11: token %s: private key %s is key type %#x, want EC (P-256…) or EC_EDWARDS (Ed25519): %w", k.token(), k.object(), kt, spec.ErrUnsupported)
		}
		obj, err := t.find(p11.CKO_PUBLIC_KEY)
		if err != nil {
			return fmt.Errorf("%w (a signing key needs its pair's public key object)", err)
		}
		attrs, err = t.c.GetAttributeValue(t.sh, obj, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_EC_PARAMS, nil), p11.NewAttribute(p11.CKA_EC_POINT, nil)})
		if err != nil || len(attrs) != 2 {
			return fmt.Errorf("pkcs11: token %s: public key %s: C_GetAttributeValue: %s", k.token(), k.object(), rvName(err))
		}
		point := attrs[1].Value
		// CKA_EC_POINT is a DER OCTET STRING; a few modules give it bare.
		var inner []byte
		if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
			point = inner
		}
		if kt == ckkECEdwards {
			if len(point) != ed25519.PublicKeySize {
				return fmt.Errorf("pkcs11: token %s: public key %s is a %d-byte Edwards point, want Ed25519's 32: %w", k.token(), k.object(), len(point), spec.ErrUnsupported)
			}
			pub = ed25519.PublicKey(point)
			return nil
		}
		var oid asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(attrs[0].Value, &oid); err != nil {
			return fmt.Errorf("pkcs11: token %s: public key %s: EC parameters are not a named curve: %w", k.token(), k.object(), spec.ErrUnsupported)
		}
		var curve elliptic.Curve
		switch {
		case oid.Equal(oidP256):
			curve = elliptic.P256()
		case oid.Equal(oidP384):
			curve = elliptic.P384()
		case oid.Equal(oidP521):
			curve = elliptic.P521()
		default:
			return fmt.Errorf("pkcs11: token %s: public key %s is on curve %v, want P-256, P-384 or P-521: %w", k.token(), k.object(), oid, spec.ErrUnsupported)
		}
		ek, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return fmt.Errorf("pkcs11: token %s: public key %s: %v: %w", k.token(), k.object(), err, spec.ErrUnsupported)
		}
		pub = ek
		return nil
	})
	return pub, err
}

// tokenSign signs msg (a digest for ECDSA) with the key's private key
// object; an ECDSA signature comes back from the token as r||s and is
// returned ASN.1 DER, crypto.Signer's form.
func tokenSign(cfg Config, k *Key, ec bool, msg []byte) (sig []byte, err error) {
	mech, name := uint(ckmEdDSA), "CKM_EDDSA"
	if ec {
		mech, name = p11.CKM_ECDSA, "CKM_ECDSA"
	}
	err = withToken(cfg, k, true, func(t *token) error {
		obj, err := t.find(p11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		if err := t.c.SignInit(t.sh, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, obj); err != nil {
			if mechanismRefused(err) {
				return fmt.Errorf("pkcs11: token %s cannot sign with %s (%s): %w", k.token(), name, rvName(err), spec.ErrUnsupported)
			}
			return fmt.Errorf("pkcs11: token %s: C_SignInit %s: %s", k.token(), name, rvName(err))
		}
		if sig, err = t.c.Sign(t.sh, msg); err != nil {
			return fmt.Errorf("pkcs11: token %s: C_Sign %s: %s", k.token(), name, rvName(err))
		}
		return nil
	})
	if err != nil || !ec {
		return sig, err
	}
	if len(sig) == 0 || len(sig)%2 != 0 {
		return nil, fmt.Errorf("pkcs11: token %s: CKM_ECDSA returned %d bytes, not r||s", k.token(), len(sig))
	}
	n := len(sig) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])})
}

// uintValue decodes a CK_ULONG attribute (native byte order, as the
// module wrote it).
func uintValue(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0)
}
