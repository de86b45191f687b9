package imagepolicy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/coffer-dev/coffer/internal/pemcert"
	"time"

	"github.com/coffer-dev/coffer/jcs"
	"github.com/coffer-dev/coffer/spec"
)

// cosign's annotations for keyless signing and the transparency log.
const (
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	ChainAnnotation       = "dev.sigstore.cosign/chain"
	BundleAnnotation      = "dev.sigstore.cosign/bundle"
)

// Fulcio's OIDC issuer extensions: v2 (a DER UTF8String) and the
// deprecated v1 (the raw string).
var (
	oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
	oidIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
)

const (
	maxAnnotation = 64 << 10
	maxChainCerts = 10
	maxCACerts    = 100
)

// sigstoreVerifier checks cosign signatures: with public keys, or with a
// Fulcio certificate chaining to the CA; with a Rekor SET when Rekor keys
// are configured (always with Fulcio). Everything is offline: the
// operator supplies the roots in the policy.
type sigstoreVerifier struct {
	keys   []crypto.PublicKey
	rekor  []*ecdsa.PublicKey
	roots  *x509.CertPool
	fulcio *FulcioRule
}

func newSigstoreVerifier(keys, rekorKeys [][]byte, f *FulcioRule) (*sigstoreVerifier, error) {
	v := &sigstoreVerifier{fulcio: f}
	for _, k := range keys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, pub)
	}
	for _, k := range rekorKeys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("the Rekor key: %w", err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("the Rekor key: want ECDSA, got %T: %w", pub, spec.ErrUnsupported)
		}
		v.rekor = append(v.rekor, ec)
	}
	if f != nil {
		certs, err := parseCerts([]byte(f.ca), maxCACerts)
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("the Fulcio CA: no certificate (%v): %w", err, spec.ErrUnsupported)
		}
		v.roots = x509.NewCertPool()
		for _, c := range certs {
			v.roots.AddCert(c)
		}
	}
	return v, nil
}

func (v *sigstoreVerifier) VerifySignature(s Signature) ([]byte, error) {
	var (
		setTime time.Time
		body    *rekorBody
		err     error
	)
	if len(v.rekor) > 0 {
		if s.SET == "" {
			return nil, fmt.Errorf("no Rekor SET (%s) while the policy requires one: %w", BundleAnnotation, spec.ErrIntegrity)
		}
		if setTime, body, err = verifySET(v.rekor, s.SET); err != nil {
			return nil, err
		}
	}
	var signerPEM func(p *pem.Block) bool // does the Rekor entry's public key name our signer?
	if v.fulcio != nil {
		cert, err := v.verifyCertificate(s, setTime)
		if err != nil {
			return nil, err
		}
		if !verifyRaw(cert.PublicKey, s.Payload, s.Sig) {
			return nil, fmt.Errorf("signature does not verify with the Fulcio certificate's key: %w", spec.ErrIntegrity)
		}
		signerPEM = func(p *pem.Block) bool { return p.Type == "CERTIFICATE" && bytes.Equal(p.Bytes, cert.Raw) }
	} else {
		var key crypto.PublicKey
		for _, k := range v.keys {
			if verifyRaw(k, s.Payload, s.Sig) {
				key = k
				break
			}
		}
		if key == nil {
			return nil, fmt.Errorf("signature verifies with none of the %d key(s): %w", len(v.keys), spec.ErrIntegrity)
		}
		signerPEM = func(p *pem.Block) bool {
			pub, err := x509.ParsePKIXPublicKey(p.Bytes)
			eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
			return err == nil && p.Type == "PUBLIC KEY" && ok && eq.Equal(key)
		}
	}
	if body != nil {
		if err := body.covers(s, signerPEM); err != nil {
			return nil, err
		}
	}
	return s.Payload, nil
}

// verifyCertificate checks the signature's Fulcio certificate: it chains
// (through the chain annotation) to the policy's CA at the time the Rekor
// SET says the signature was logged, is for code signing, and names the
// policy's email and OIDC issuer.
func (v *sigstoreVerifier) verifyCertificate(s Signature, at time.Time) (*x509.Certificate, error) {
	if s.Certificate == "" {
		return nil, fmt.Errorf("no Fulcio certificate (%s): %w", CertificateAnnotation, spec.ErrIntegrity)
	}
	leaf, err := parseCerts([]byte(s.Certificate), 1)
	if err != nil || len(leaf) != 1 {
		return nil, fmt.Errorf("the Fulcio certificate: %v: %w", err, spec.ErrIntegrity)
	}
	inter := x509.NewCertPool()
	if s.Chain != "" {
		chain, err := parseCerts([]byte(s.Chain), maxChainCerts)
		if err != nil {
			return nil, fmt.Errorf("the Fulcio chain: %v: %w", err, spec.ErrIntegrity)
		}
		for _, c := range chain {
			inter.AddCert(c)
		}
	}
	cert := leaf[0]
	if _, err := cert.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}); err != nil {
		return nil, fmt.Errorf("the Fulcio certificate at %s: %v: %w", at.UTC().Format(time.RFC3339), err, spec.ErrIntegrity)
	}
	if !containsString(cert.EmailAddresses, v.fulcio.SubjectEmail) {
		return nil, fmt.Errorf("the Fulcio certificate is for %v, not %s: %w", cert.EmailAddresses, v.fulcio.SubjectEmail, spec.ErrIntegrity)
	}
	if iss := certIssuer(cert); iss != v.fulcio.OIDCIssuer {
		return nil, fmt.Errorf("the Fulcio certificate's OIDC issuer is %q, not %q: %w", iss, v.fulcio.OIDCIssuer, spec.ErrIntegrity)
	}
	return cert, nil
}

func certIssuer(c *x509.Certificate) string {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidIssuerV2) {
			var s string
			if rest, err := asn1.UnmarshalWithParams(e.Value, &s, "utf8"); err == nil && len(rest) == 0 {
				return s
			}
		}
	}
	for _, e := range c.Extensions {
		if e.Id.Equal(oidIssuerV1) {
			return string(e.Value)
		}
	}
	return ""
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// parseCerts reads at most max PEM certificates.
func parseCerts(data []byte, max int) ([]*x509.Certificate, error) {
	if len(data) > maxKeySize {
		return nil, fmt.Errorf("certificates: too large")
	}
	return pemcert.Parse(data, max)
}

// rekorSET is cosign's bundle annotation: a Rekor entry and the log's
// signature (SET) over the canonical JSON of its Payload.
type rekorSET struct {
	SignedEntryTimestamp []byte          `json:"SignedEntryTimestamp"`
	Payload              json.RawMessage `json:"Payload"`
}

type rekorPayload struct {
	Body           string `json:"body"`
	IntegratedTime int64  `json:"integratedTime"`
	LogIndex       int64  `json:"logIndex"`
	LogID          string `json:"logID"`
}

// rekorBody is a hashedrekord v0.0.1 entry.
type rekorBody struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Data struct {
			Hash struct {
				Algorithm string `json:"algorithm"`
				Value     string `json:"value"`
			} `json:"hash"`
		} `json:"data"`
		Signature struct {
			Content   []byte `json:"content"`
			PublicKey struct {
				Content []byte `json:"content"`
			} `json:"publicKey"`
		} `json:"signature"`
	} `json:"spec"`
}

// verifySET checks the SET with one of the Rekor keys and returns the
// entry's integration time and body.
func verifySET(keys []*ecdsa.PublicKey, annotation string) (time.Time, *rekorBody, error) {
	bad := func(why string, args ...any) (time.Time, *rekorBody, error) {
		return time.Time{}, nil, fmt.Errorf("Rekor SET: "+why+": %w", append(args, spec.ErrIntegrity)...)
	}
	if len(annotation) > maxAnnotation {
		return bad("%d bytes", len(annotation))
	}
	var set rekorSET
	if err := strictDecode([]byte(annotation), &set); err != nil {
		return bad("%v", err)
	}
	canon, err := jcs.Canonicalize(set.Payload)
	if err != nil {
		return bad("%v", err)
	}
	sum := sha256.Sum256(canon)
	ok := false
	for _, k := range keys {
		ok = ok || ecdsa.VerifyASN1(k, sum[:], set.SignedEntryTimestamp)
	}
	if !ok {
		return bad("not signed by any of the policy's %d Rekor key(s)", len(keys))
	}
	// Parse the bytes that were verified (canonical), not the delivered ones.
	var p rekorPayload
	if err := strictDecode(canon, &p); err != nil {
		return bad("%v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(p.Body)
	if err != nil {
		return bad("body: %v", err)
	}
	var body rekorBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return bad("body: %v", err)
	}
	if body.Kind != "hashedrekord" || body.APIVersion != "0.0.1" {
		return bad("entry %s %s, want hashedrekord 0.0.1", body.Kind, body.APIVersion)
	}
	return time.Unix(p.IntegratedTime, 0), &body, nil
}

// covers checks that the logged entry is this signature: the payload's
// hash, the signature bytes and the signer's key or certificate.
func (b *rekorBody) covers(s Signature, signer func(*pem.Block) bool) error {
	sum := sha256.Sum256(s.Payload)
	switch {
	case b.Spec.Data.Hash.Algorithm != "sha256" || b.Spec.Data.Hash.Value != hex.EncodeToString(sum[:]):
		return fmt.Errorf("the Rekor entry logs another payload: %w", spec.ErrIntegrity)
	case !bytes.Equal(b.Spec.Signature.Content, s.Sig):
		return fmt.Errorf("the Rekor entry logs another signature: %w", spec.ErrIntegrity)
	}
	p, _ := pem.Decode(b.Spec.Signature.PublicKey.Content)
	if p == nil || !signer(p) {
		return fmt.Errorf("the Rekor entry logs another signer: %w", spec.ErrIntegrity)
	}
	return nil
}
