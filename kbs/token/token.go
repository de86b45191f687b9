// Package token issues and verifies the broker's JWTs: EAR attestation
// results (ES256, the signer's public key in the "jwk" header) handed to
// attested clients, and the Ed25519 ("EdDSA") admin tokens that trustee's
// kbs-client signs.
package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

var b64 = base64.RawURLEncoding

// EAR profile and status names (draft-ietf-rats-ear).
const (
	Profile                = "tag:github.com,2024:confidential-containers/Trustee" // trustee's current default EAR profile
	StatusNone             = "none"
	StatusAffirming        = "affirming"
	StatusWarning          = "warning"
	StatusContraindicated  = "contraindicated"
	DefaultIssuer          = "coffer-kbs"
	DefaultTTL             = 5 * time.Minute
	DefaultSubmod          = "cpu0"
	DefaultAppraisalPolicy = "default_cpu"
)

// TrustVector is the AR4SI trustworthiness vector; 0 means "no claim".
type TrustVector struct {
	InstanceIdentity int `json:"instance-identity"`
	Configuration    int `json:"configuration"`
	Executables      int `json:"executables"`
	FileSystem       int `json:"file-system"`
	Hardware         int `json:"hardware"`
	RuntimeOpaque    int `json:"runtime-opaque"`
	StorageOpaque    int `json:"storage-opaque"`
	SourcedData      int `json:"sourced-data"`
}

// Tier maps one trust claim value to its status: 2–31 affirming, 32–95
// (and 1) warning, 96–127 (and anything out of range) contraindicated, 0 none.
func Tier(v int) string {
	switch {
	case v == 0:
		return StatusNone
	case v >= 2 && v <= 31:
		return StatusAffirming
	case v == 1 || (v >= 32 && v <= 95):
		return StatusWarning
	}
	return StatusContraindicated
}

// Status is the worst tier among the vector's claims.
func (tv TrustVector) Status() string {
	rank := map[string]int{StatusNone: 0, StatusAffirming: 1, StatusWarning: 2, StatusContraindicated: 3}
	worst := StatusNone
	for _, v := range []int{tv.InstanceIdentity, tv.Configuration, tv.Executables, tv.FileSystem,
		tv.Hardware, tv.RuntimeOpaque, tv.StorageOpaque, tv.SourcedData} {
		if t := Tier(v); rank[t] > rank[worst] {
			worst = t
		}
	}
	return worst
}

// Submod is one appraisal inside an EAR.
type Submod struct {
	Status            string         `json:"ear.status"`
	TrustVector       TrustVector    `json:"ear.trustworthiness-vector"`
	PolicyID          string         `json:"ear.appraisal-policy-id"`
	AnnotatedEvidence map[string]any `json:"ear.veraison.annotated-evidence"`
	// PolicyClaims carries what the appraisal policy adds, here
	// {"reasons":[…]}: why a trust vector claim is not affirming.
	PolicyClaims map[string]any `json:"ear.veraison.policy-claims,omitempty"`
}

// EAR is the claims set of an attestation result token.
type EAR struct {
	Profile    string            `json:"eat_profile"`
	IssuedAt   int64             `json:"iat"`
	Expiry     int64             `json:"exp"`
	Issuer     string            `json:"iss"`
	VerifierID map[string]string `json:"ear.verifier-id,omitempty"`
	Submods    map[string]Submod `json:"submods"`
}

// AnnotatedEvidence builds the "ear.veraison.annotated-evidence" object the
// reference emits: the TEE's claims under its name, the report data, the
// runtime data claims (nonce, tee-pubkey) and the init data digest if any.
func AnnotatedEvidence(tee protocol.Tee, claims map[string]any, reportData string, rd protocol.RuntimeData, initData string) map[string]any {
	m := map[string]any{
		string(tee):           claims,
		"report_data":         reportData,
		"runtime_data_claims": map[string]any{"nonce": rd.Nonce, "tee-pubkey": rd.TeePubKey},
	}
	if initData != "" {
		m["init_data"] = initData
	}
	return m
}

// Signer issues and verifies EAR tokens with one P-256 key, in memory or
// any crypto.Signer (a PKCS#11 token's, NewSignerFrom).
type Signer struct {
	key    crypto.Signer
	pub    *ecdsa.PublicKey
	jwk    protocol.TeePubKey
	header string // base64url of the JOSE header, computed once
	issuer string
	ttl    time.Duration
}

// NewSigner returns a Signer. key nil generates a fresh P-256 key; issuer
// "" means DefaultIssuer; ttl 0 means DefaultTTL.
func NewSigner(key *ecdsa.PrivateKey, issuer string, ttl time.Duration) (*Signer, error) {
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	return NewSignerFrom(key, issuer, ttl)
}

// NewSignerFrom is NewSigner with a P-256 crypto.Signer that returns ASN.1
// DER signatures, as crypto/ecdsa's and keywrap/pkcs11's do: the token's
// ES256 signatures are their r||s form.
func NewSignerFrom(key crypto.Signer, issuer string, ttl time.Duration) (*Signer, error) {
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ear signing key must be P-256: %w", spec.ErrUnsupported)
	}
	if issuer == "" {
		issuer = DefaultIssuer
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	jwk, err := protocol.PublicTeeKey(pub)
	if err != nil {
		return nil, err
	}
	s := &Signer{key: key, pub: pub, issuer: issuer, ttl: ttl, jwk: jwk}
	s.setHeader(nil)
	return s, nil
}

func (s *Signer) setHeader(x5c []string) {
	jwk := map[string]any{"kty": "EC", "crv": "P-256", "alg": "ES256", "x": s.jwk.X, "y": s.jwk.Y}
	if len(x5c) > 0 {
		jwk["x5c"] = x5c
	}
	hdr, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT", "jwk": jwk})
	s.header = b64.EncodeToString(hdr)
}

// SetCertChain makes issued tokens carry certs (leaf first, the leaf
// certifying the signing key) as the header jwk's x5c, the way trustee's
// attestation service endorses its key, so that a broker trusting the chain's
// root accepts them (TrustedIssuers). Call before issuing.
func (s *Signer) SetCertChain(certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return fmt.Errorf("token certificate chain is empty: %w", spec.ErrUnsupported)
	}
	if !s.pub.Equal(certs[0].PublicKey) {
		return fmt.Errorf("token certificate does not certify the token signing key: %w", spec.ErrUnsupported)
	}
	x5c := make([]string, len(certs))
	for i, c := range certs {
		x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	s.setHeader(x5c)
	return nil
}

// PublicKey returns the verification key.
func (s *Signer) PublicKey() *ecdsa.PublicKey { return s.pub }

// TTL returns the lifetime of issued tokens.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Issue signs an EAR for one submodule (DefaultSubmod), setting profile,
// issuer, iat and exp.
func (s *Signer) Issue(now time.Time, sub Submod) (string, error) {
	tok, _, err := s.issue(now, sub)
	return tok, err
}

// IssueVerified is Issue that also returns the token as Verify would,
// without the cost of verifying a signature just made.
func (s *Signer) IssueVerified(now time.Time, sub Submod) (string, *Verified, error) {
	tok, payload, err := s.issue(now, sub)
	if err != nil {
		return "", nil, err
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", nil, err
	}
	v := &Verified{Claims: claims, Payload: payload, Status: sub.Status, Expiry: time.Unix(now.Add(s.ttl).Unix(), 0)}
	if rdc, ok := sub.AnnotatedEvidence["runtime_data_claims"].(map[string]any); ok {
		if pk, ok := rdc["tee-pubkey"].(protocol.TeePubKey); ok {
			v.TeePubKey = &pk
		}
	}
	return tok, v, nil
}

func (s *Signer) issue(now time.Time, sub Submod) (string, []byte, error) {
	ear := EAR{
		Profile:    Profile,
		IssuedAt:   now.Unix(),
		Expiry:     now.Add(s.ttl).Unix(),
		Issuer:     s.issuer,
		VerifierID: map[string]string{"build": "coffer", "developer": "https://github.com/coffer-dev/coffer"},
		Submods:    map[string]Submod{DefaultSubmod: sub},
	}
	payload, err := json.Marshal(ear)
	if err != nil {
		return "", nil, err
	}
	signing := s.header + "." + b64.EncodeToString(payload)
	sig, err := s.sign(signing)
	if err != nil {
		return "", nil, err
	}
	return signing + "." + sig, payload, nil
}

// sign is the base64url ES256 signature (r||s, 32 bytes each) of signing.
func (s *Signer) sign(signing string) (string, error) {
	h := sha256.Sum256([]byte(signing))
	der, err := s.key.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 ||
		rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
		return "", fmt.Errorf("signing token: the key's signature is not a P-256 ASN.1 ECDSA signature")
	}
	sig := make([]byte, 64)
	rs.R.FillBytes(sig[:32])
	rs.S.FillBytes(sig[32:])
	return b64.EncodeToString(sig), nil
}

// Verified is a token that passed Verify.
type Verified struct {
	Claims    map[string]any      // the whole claims set (resource policy input)
	Payload   []byte              // the same claims as the token's JSON
	Status    string              // submods.cpu0 ear.status
	TeePubKey *protocol.TeePubKey // runtime_data_claims.tee-pubkey, if any
	Expiry    time.Time
}

// Verify checks the signature (against this signer's key only, whatever
// the header's jwk says) and expiry of an EAR token. Failures wrap
// spec.ErrIntegrity.
func (s *Signer) Verify(tok string, now time.Time) (*Verified, error) {
	hdr, payload, sig, err := split(tok)
	if err != nil {
		return nil, err
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "ES256" || len(sig) != 64 {
		return nil, fmt.Errorf("token: not an ES256 JWT: %w", spec.ErrIntegrity)
	}
	if !verifyES256(s.pub, tok, sig) {
		return nil, fmt.Errorf("token: bad signature: %w", spec.ErrIntegrity)
	}
	return parseEAR(payload, now)
}

// verifyES256 checks a compact JWS's 64-byte ES256 signature over its
// header.payload.
func verifyES256(pub *ecdsa.PublicKey, tok string, sig []byte) bool {
	d := sha256.Sum256([]byte(tok[:strings.LastIndexByte(tok, '.')]))
	return ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

func parseEAR(payload []byte, now time.Time) (*Verified, error) {
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("token claims: %v: %w", err, spec.ErrIntegrity)
	}
	var ear struct {
		Expiry  int64 `json:"exp"`
		Submods map[string]struct {
			Status string `json:"ear.status"`
			AE     struct {
				RDC struct {
					TeePubKey *protocol.TeePubKey `json:"tee-pubkey"`
				} `json:"runtime_data_claims"`
			} `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	if err := json.Unmarshal(payload, &ear); err != nil {
		return nil, fmt.Errorf("token claims: %v: %w", err, spec.ErrIntegrity)
	}
	exp := time.Unix(ear.Expiry, 0)
	if ear.Expiry == 0 || !now.Before(exp) {
		return nil, fmt.Errorf("token expired at %s: %w", exp.UTC().Format(time.RFC3339), spec.ErrIntegrity)
	}
	sub := ear.Submods[DefaultSubmod]
	return &Verified{Claims: claims, Payload: payload, Status: sub.Status, TeePubKey: sub.AE.RDC.TeePubKey, Expiry: exp}, nil
}

func split(tok string) (hdr, payload, sig []byte, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil, nil, fmt.Errorf("token: not a compact JWS: %w", spec.ErrIntegrity)
	}
	var e1, e2, e3 error
	hdr, e1 = b64.DecodeString(parts[0])
	payload, e2 = b64.DecodeString(parts[1])
	sig, e3 = b64.DecodeString(parts[2])
	if e1 != nil || e2 != nil || e3 != nil {
		return nil, nil, nil, fmt.Errorf("token: bad base64url: %w", spec.ErrIntegrity)
	}
	return hdr, payload, sig, nil
}

// LoadSigningKey parses a PEM P-256 private key (PKCS#8 or SEC 1 "EC PRIVATE KEY").
func LoadSigningKey(pemBytes []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, fmt.Errorf("ear signing key: no PEM block: %w", spec.ErrUnsupported)
	}
	var k any
	var err error
	if blk.Type == "EC PRIVATE KEY" {
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	} else {
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("ear signing key: %v: %w", err, spec.ErrUnsupported)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ear signing key must be EC P-256, got %T: %w", k, spec.ErrUnsupported)
	}
	return ek, nil
}

var _ crypto.Signer = (*ecdsa.PrivateKey)(nil)

// SignJWS signs payload as a compact ES256 JWS whose header is
// {"alg":"ES256","typ":typ} (no key in it: verifiers pin the key).
func (s *Signer) SignJWS(typ string, payload []byte) (string, error) {
	hdr, err := json.Marshal(map[string]string{"alg": "ES256", "typ": typ})
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString(hdr) + "." + b64.EncodeToString(payload)
	sig, err := s.sign(signing)
	if err != nil {
		return "", err
	}
	return signing + "." + sig, nil
}

// MaxJWS bounds a JWS VerifyJWS looks at.
const MaxJWS = 16 << 10

// VerifyJWS checks a compact ES256 JWS of header type typ (SignJWS's)
// against the pinned keys and returns its payload. Failures wrap
// spec.ErrIntegrity.
func VerifyJWS(tok, typ string, keys []*ecdsa.PublicKey) ([]byte, error) {
	if len(tok) > MaxJWS {
		return nil, fmt.Errorf("jws over %d bytes: %w", MaxJWS, spec.ErrIntegrity)
	}
	hdr, payload, sig, err := split(tok)
	if err != nil {
		return nil, err
	}
	var h struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "ES256" || h.Typ != typ || len(sig) != 64 {
		return nil, fmt.Errorf("jws: not an ES256 %q: %w", typ, spec.ErrIntegrity)
	}
	for _, k := range keys {
		if k != nil && verifyES256(k, tok, sig) {
			return payload, nil
		}
	}
	return nil, fmt.Errorf("jws: not signed by a pinned key: %w", spec.ErrIntegrity)
}

// LoadVerifyKey parses a pinned P-256 verification key: a PKIX "PUBLIC
// KEY" PEM (e.g. `openssl ec -in token.pem -pubout`) or a "CERTIFICATE"
// whose key it is.
func LoadVerifyKey(pemBytes []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, fmt.Errorf("verification key: no PEM block: %w", spec.ErrUnsupported)
	}
	var pub any
	var err error
	switch blk.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("verification key: PEM %q, want PUBLIC KEY or CERTIFICATE: %w", blk.Type, spec.ErrUnsupported)
	}
	if err != nil {
		return nil, fmt.Errorf("verification key: %v: %w", err, spec.ErrUnsupported)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("verification key: want a P-256 key: %w", spec.ErrUnsupported)
	}
	return k, nil
}
