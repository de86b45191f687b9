package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/coffer-dev/coffer/internal/pemcert"
	"math/big"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

// Bounds on a token's x5c chain, checked before any certificate is parsed.
const (
	maxChainCerts = 5
	maxCertBytes  = 8 << 10
)

// TrustedIssuers verifies EAR tokens signed by other attestation services
// ("passport" mode: one service attests, brokers elsewhere release): the
// header's jwk must carry an x5c chain that verifies to one of the roots at
// the verification time, its leaf must be the jwk, and the ES256 signature
// must verify with it. This is how trustee's broker trusts its attestation
// service's tokens.
type TrustedIssuers struct {
	roots *x509.CertPool
	n     int
}

// NewTrustedIssuers reads PEM certificates (roots of trusted token chains).
func NewTrustedIssuers(pems ...[]byte) (*TrustedIssuers, error) {
	t := &TrustedIssuers{roots: x509.NewCertPool()}
	for _, p := range pems {
		certs, err := pemcert.Parse(p, 0)
		if err != nil {
			return nil, fmt.Errorf("trusted token certificate: %v: %w", err, spec.ErrUnsupported)
		}
		for _, c := range certs {
			t.roots.AddCert(c)
			t.n++
		}
	}
	if t.n == 0 {
		return nil, fmt.Errorf("no certificate in the trusted token certificates: %w", spec.ErrUnsupported)
	}
	return t, nil
}

// Verify checks a token against the trusted roots; failures wrap spec.ErrIntegrity.
func (t *TrustedIssuers) Verify(tok string, now time.Time) (*Verified, error) {
	hdr, payload, sig, err := split(tok)
	if err != nil {
		return nil, err
	}
	var h struct {
		Alg string `json:"alg"`
		JWK struct {
			Kty string   `json:"kty"`
			Crv string   `json:"crv"`
			X   string   `json:"x"`
			Y   string   `json:"y"`
			X5C []string `json:"x5c"`
		} `json:"jwk"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "ES256" || len(sig) != 64 {
		return nil, fmt.Errorf("token: not an ES256 JWT: %w", spec.ErrIntegrity)
	}
	if len(h.JWK.X5C) == 0 || len(h.JWK.X5C) > maxChainCerts {
		return nil, fmt.Errorf("token: not signed by this broker, and its jwk carries no x5c chain (1 to %d certificates) to check against the trusted issuers: %w", maxChainCerts, spec.ErrIntegrity)
	}
	var certs []*x509.Certificate
	for _, s := range h.JWK.X5C {
		if len(s) > maxCertBytes*4/3+4 {
			return nil, fmt.Errorf("token: x5c certificate over %d bytes: %w", maxCertBytes, spec.ErrIntegrity)
		}
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("token: x5c is not base64: %w", spec.ErrIntegrity)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("token: x5c certificate: %v: %w", err, spec.ErrIntegrity)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: t.roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("token: x5c chain not trusted: %v: %w", err, spec.ErrIntegrity)
	}
	leaf, ok := certs[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || leaf.Curve != elliptic.P256() {
		return nil, fmt.Errorf("token: x5c leaf is not a P-256 key: %w", spec.ErrIntegrity)
	}
	if x, y := b64Int(h.JWK.X), b64Int(h.JWK.Y); x == nil || y == nil || x.Cmp(leaf.X) != 0 || y.Cmp(leaf.Y) != 0 {
		return nil, fmt.Errorf("token: jwk does not match its x5c leaf: %w", spec.ErrIntegrity)
	}
	if !verifyES256(leaf, tok, sig) {
		return nil, fmt.Errorf("token: bad signature: %w", spec.ErrIntegrity)
	}
	return parseEAR(payload, now)
}

func b64Int(s string) *big.Int {
	b, err := b64.DecodeString(s)
	if err != nil || len(b) == 0 || len(b) > 66 {
		return nil
	}
	return new(big.Int).SetBytes(b)
}
