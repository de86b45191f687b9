package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

// Admin token defaults. AdminTTL is the lifetime trustee's kbs-client
// gives its tokens, and so the longest lifetime a broker accepts unless
// configured otherwise (AdminCheck.MaxTTL); coffer's own clients sign a
// short-lived token per call (AdminClientTTL).
const (
	AdminTTL       = 2 * time.Hour
	AdminClientTTL = 5 * time.Minute
	AdminSkew      = 60 * time.Second // tolerated clock skew for nbf/iat
)

// AdminClaims are the claims of an admin token.
type AdminClaims struct {
	IssuedAt  int64  `json:"iat"`
	Expiry    int64  `json:"exp"`
	NotBefore int64  `json:"nbf"`
	Role      string `json:"role,omitempty"`
	ID        string `json:"jti,omitempty"` // unique per token; brokers refuse a write that reuses one
	// AllowPaths scopes the token to resource paths matching any of these
	// patterns (path.Match over repo/type/tag, e.g. "tenant-a/*/*"); a
	// scoped token cannot change policies or reference values. Empty: unscoped.
	AllowPaths []string `json:"allow_paths,omitempty"`
}

// Bounds of AllowPaths.
const (
	MaxAllowPaths      = 64
	MaxAllowPathLength = 256
)

// ValidatePathPattern checks a resource path pattern: three non-empty
// /-separated segments in path.Match syntax.
func ValidatePathPattern(p string) error {
	if len(p) == 0 || len(p) > MaxAllowPathLength {
		return fmt.Errorf("path pattern of %d bytes: want 1..%d: %w", len(p), MaxAllowPathLength, spec.ErrUnsupported)
	}
	segs := strings.Split(p, "/")
	if len(segs) != 3 || segs[0] == "" || segs[1] == "" || segs[2] == "" {
		return fmt.Errorf("path pattern %q: want repo/type/tag, e.g. tenant-a/*/*: %w", p, spec.ErrUnsupported)
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("path pattern %q: %v: %w", p, err, spec.ErrUnsupported)
	}
	return nil
}

// MatchPath reports whether the resource path p (repo/type/tag) matches
// any of patterns (validated with ValidatePathPattern).
func MatchPath(patterns []string, p string) bool {
	for _, pat := range patterns {
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

// AdminCheck is what VerifyAdmin requires beyond a good signature.
type AdminCheck struct {
	Role   string        // required role claim; "" = any
	MaxTTL time.Duration // longest exp − iat accepted; 0 = AdminTTL
}

var adminHeader = b64.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT"}`))

// SignAdmin returns an admin JWT valid from now for ttl (AdminTTL if 0),
// with a random jti.
func SignAdmin(key ed25519.PrivateKey, role string, now time.Time, ttl time.Duration) string {
	return SignAdminClaims(key, AdminClaims{Role: role}, now, ttl)
}

// SignAdminClaims is SignAdmin with the role and AllowPaths of c (its
// times and jti are set here).
func SignAdminClaims(key ed25519.PrivateKey, c AdminClaims, now time.Time, ttl time.Duration) string {
	tok, _ := SignAdminWith(key, c, now, ttl, false) // an in-memory Ed25519 key does not fail
	return tok
}

// SignAdminReusable is SignAdminClaims without a jti: the broker accepts it
// for any number of writes until it expires (as trustee's kbs-client tokens),
// so keep its lifetime short. For a tenant's pre-issued, path-scoped token.
func SignAdminReusable(key ed25519.PrivateKey, c AdminClaims, now time.Time, ttl time.Duration) string {
	tok, _ := SignAdminWith(key, c, now, ttl, true)
	return tok
}

// SignAdminWith is SignAdminClaims (SignAdminReusable when reusable) with
// any Ed25519 crypto.Signer: an ed25519.PrivateKey, or a key that stays in
// a PKCS#11 token (keywrap/pkcs11.Signer), whose signing can fail.
func SignAdminWith(key crypto.Signer, c AdminClaims, now time.Time, ttl time.Duration, reusable bool) (string, error) {
	if _, ok := key.Public().(ed25519.PublicKey); !ok {
		return "", fmt.Errorf("admin key is %T, want Ed25519: %w", key.Public(), spec.ErrUnsupported)
	}
	if ttl <= 0 {
		ttl = AdminTTL
	}
	c.IssuedAt, c.NotBefore, c.Expiry, c.ID = now.Unix(), now.Unix(), now.Add(ttl).Unix(), ""
	if !reusable {
		var id [16]byte
		_, _ = rand.Read(id[:])
		c.ID = hex.EncodeToString(id[:])
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := adminHeader + "." + b64.EncodeToString(b)
	sig, err := key.Sign(rand.Reader, []byte(signing), crypto.Hash(0))
	if err != nil {
		return "", fmt.Errorf("signing admin token: %w", err)
	}
	return signing + "." + b64.EncodeToString(sig), nil
}

// VerifyAdmin checks an admin JWT against any of keys: alg EdDSA, signature,
// iat and exp present, exp in the future, a lifetime (exp − iat) of at most
// chk.MaxTTL, nbf and iat not in the future (AdminSkew tolerated), and, when
// chk.Role is not "", a matching role claim. Failures wrap spec.ErrIntegrity
// (spec.ErrPolicyDenied for a wrong role).
func VerifyAdmin(tok string, keys []ed25519.PublicKey, chk AdminCheck, now time.Time) (*AdminClaims, error) {
	hdr, payload, sig, err := split(tok)
	if err != nil {
		return nil, err
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil || h.Alg != "EdDSA" {
		return nil, fmt.Errorf("admin token: alg must be EdDSA: %w", spec.ErrIntegrity)
	}
	signing := tok[:strings.LastIndexByte(tok, '.')]
	ok := false
	for _, k := range keys {
		if ed25519.Verify(k, []byte(signing), sig) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("admin token: signature does not match any admin key: %w", spec.ErrIntegrity)
	}
	var c AdminClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("admin token claims: %v: %w", err, spec.ErrIntegrity)
	}
	n := now.Unix()
	skew := int64(AdminSkew / time.Second)
	maxTTL := chk.MaxTTL
	if maxTTL <= 0 {
		maxTTL = AdminTTL
	}
	role := chk.Role
	switch {
	case c.IssuedAt == 0 || c.Expiry == 0:
		return nil, fmt.Errorf("admin token without iat and exp: %w", spec.ErrIntegrity)
	case c.Expiry <= c.IssuedAt || c.Expiry-c.IssuedAt > int64(maxTTL/time.Second):
		return nil, fmt.Errorf("admin token lifetime (exp − iat) of %ds, this broker accepts at most %v: %w", c.Expiry-c.IssuedAt, maxTTL, spec.ErrIntegrity)
	case n >= c.Expiry:
		return nil, fmt.Errorf("admin token expired: %w", spec.ErrIntegrity)
	case c.NotBefore > n+skew:
		return nil, fmt.Errorf("admin token not valid yet (nbf): %w", spec.ErrIntegrity)
	case c.IssuedAt > n+skew:
		return nil, fmt.Errorf("admin token issued in the future: %w", spec.ErrIntegrity)
	case role != "" && c.Role != role:
		return nil, fmt.Errorf("admin token role %q, need %q: %w", c.Role, role, spec.ErrPolicyDenied)
	case len(c.AllowPaths) > MaxAllowPaths:
		return nil, fmt.Errorf("admin token with %d allow_paths, at most %d: %w", len(c.AllowPaths), MaxAllowPaths, spec.ErrIntegrity)
	}
	for _, p := range c.AllowPaths {
		if err := ValidatePathPattern(p); err != nil {
			return nil, fmt.Errorf("admin token allow_paths: %v: %w", err, spec.ErrIntegrity)
		}
	}
	return &c, nil
}

// GenerateAdminKey returns a new Ed25519 key pair as PEM: PKCS#8 private
// and PKIX public, the files `openssl genpkey -algorithm ed25519` and
// `openssl pkey -pubout` write.
func GenerateAdminKey() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pk, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), nil
}

// ParseAdminPrivateKey parses a PKCS#8 Ed25519 private key PEM.
func ParseAdminPrivateKey(pemBytes []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("admin private key: want a PKCS#8 \"PRIVATE KEY\" PEM block: %w", spec.ErrUnsupported)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin private key: %v: %w", err, spec.ErrUnsupported)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("admin private key is %T, want Ed25519: %w", k, spec.ErrUnsupported)
	}
	return ek, nil
}

// ParseAdminPublicKey parses a PKIX Ed25519 public key PEM; a PKCS#8
// private key PEM is accepted too and its public half returned.
func ParseAdminPublicKey(pemBytes []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, fmt.Errorf("admin public key: no PEM block: %w", spec.ErrUnsupported)
	}
	if blk.Type == "PRIVATE KEY" {
		k, err := ParseAdminPrivateKey(pemBytes)
		if err != nil {
			return nil, err
		}
		return k.Public().(ed25519.PublicKey), nil
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin public key: %v: %w", err, spec.ErrUnsupported)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("admin public key is %T, want Ed25519: %w", k, spec.ErrUnsupported)
	}
	return ek, nil
}
