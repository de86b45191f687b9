package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

func TestTier(t *testing.T) {
	tests := map[int]string{0: "none", 1: "warning", 2: "affirming", 31: "affirming", 32: "warning", 95: "warning", 96: "contraindicated", 127: "contraindicated", -1: "contraindicated"}
	for v, want := range tests {
		if got := Tier(v); got != want {
			t.Errorf("Tier(%d): got %s, want %s", v, got, want)
		}
	}
	if got := (TrustVector{Executables: 3, Hardware: 2}).Status(); got != StatusAffirming {
		t.Errorf("Status: got %s", got)
	}
	if got := (TrustVector{Executables: 33, Hardware: 2}).Status(); got != StatusWarning {
		t.Errorf("Status: got %s", got)
	}
	if got := (TrustVector{Executables: 33, Hardware: 97}).Status(); got != StatusContraindicated {
		t.Errorf("Status: got %s", got)
	}
	if got := (TrustVector{}).Status(); got != StatusNone {
		t.Errorf("Status: got %s", got)
	}
}

func sampleSubmod() Submod {
	_, pub, _ := protocol.GenerateTeeKey()
	return Submod{Status: StatusAffirming, TrustVector: TrustVector{Executables: 3}, PolicyID: DefaultAppraisalPolicy,
		AnnotatedEvidence: AnnotatedEvidence("sample", map[string]any{"svn": "1"}, "rd", protocol.RuntimeData{Nonce: "n", TeePubKey: pub}, "")}
}

func TestEARRoundTrip(t *testing.T) {
	s, err := NewSigner(nil, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sub := sampleSubmod()
	tok, err := s.Issue(now, sub)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	wantPub := sub.AnnotatedEvidence["runtime_data_claims"].(map[string]any)["tee-pubkey"].(protocol.TeePubKey)
	if v.Status != StatusAffirming || v.TeePubKey == nil || *v.TeePubKey != wantPub {
		t.Fatalf("verified: got %+v", v)
	}
	if v.Claims["eat_profile"] != Profile || v.Claims["iss"] != DefaultIssuer {
		t.Fatalf("claims: got %v", v.Claims)
	}
	// Independent check with go-jose using the key embedded in the header.
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	jwk := jws.Signatures[0].Protected.JSONWebKey
	if jwk == nil {
		t.Fatal("no jwk in the EAR header")
	}
	if _, err := jws.Verify(jwk); err != nil {
		t.Fatalf("go-jose verify with header jwk: %v", err)
	}
	if _, err := jws.Verify(s.PublicKey()); err != nil {
		t.Fatalf("go-jose verify: %v", err)
	}
}

func TestEARRejects(t *testing.T) {
	s, _ := NewSigner(nil, "", time.Minute)
	other, _ := NewSigner(nil, "", time.Minute)
	now := time.Now()
	tok, _ := s.Issue(now, sampleSubmod())
	foreign, _ := other.Issue(now, sampleSubmod())
	parts := strings.Split(tok, ".")
	tampered := parts[0] + "." + parts[1][:len(parts[1])-2] + "xx." + parts[2]
	tests := map[string]struct {
		tok string
		at  time.Time
	}{
		"expired":      {tok, now.Add(2 * time.Minute)},
		"tampered":     {tampered, now},
		"other signer": {foreign, now},
		"garbage":      {"a.b.c", now},
		"two parts":    {parts[0] + "." + parts[1], now},
		"alg none":     {b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", now},
	}
	for name, tt := range tests {
		if _, err := s.Verify(tt.tok, tt.at); !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("%s: got %v, want ErrIntegrity", name, err)
		}
	}
}

func TestLoadSigningKey(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(k)
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, blk := range []*pem.Block{{Type: "EC PRIVATE KEY", Bytes: sec1}, {Type: "PRIVATE KEY", Bytes: p8}} {
		got, err := LoadSigningKey(pem.EncodeToMemory(blk))
		if err != nil || !got.Equal(k) {
			t.Fatalf("%s: got %v", blk.Type, err)
		}
	}
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p8, _ = x509.MarshalPKCS8PrivateKey(k384)
	if _, err := LoadSigningKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("P-384: got %v, want ErrUnsupported", err)
	}
}

func TestAdminToken(t *testing.T) {
	privPEM, pubPEM, err := GenerateAdminKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParseAdminPrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseAdminPublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPEM, _ := GenerateAdminKey()
	other, _ := ParseAdminPublicKey(otherPEM)
	now := time.Now()
	tok := SignAdmin(priv, "", now, 0)
	if _, err := VerifyAdmin(tok, []ed25519.PublicKey{other, pub}, AdminCheck{}, now); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	tests := map[string]struct {
		tok  string
		keys []ed25519.PublicKey
		role string
		at   time.Time
		want error
	}{
		"expired":      {tok, []ed25519.PublicKey{pub}, "", now.Add(AdminTTL + time.Second), spec.ErrIntegrity},
		"wrong key":    {tok, []ed25519.PublicKey{other}, "", now, spec.ErrIntegrity},
		"no keys":      {tok, nil, "", now, spec.ErrIntegrity},
		"not yet":      {SignAdmin(priv, "", now.Add(time.Hour), 0), []ed25519.PublicKey{pub}, "", now, spec.ErrIntegrity},
		"missing role": {tok, []ed25519.PublicKey{pub}, "admin", now, spec.ErrPolicyDenied},
		"tampered":     {tok[:len(tok)-3] + "AAA", []ed25519.PublicKey{pub}, "", now, spec.ErrIntegrity},
		"es256":        {b64.EncodeToString([]byte(`{"alg":"ES256"}`)) + tok[strings.IndexByte(tok, '.'):], []ed25519.PublicKey{pub}, "", now, spec.ErrIntegrity},
	}
	for name, tt := range tests {
		if _, err := VerifyAdmin(tt.tok, tt.keys, AdminCheck{Role: tt.role}, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", name, err, tt.want)
		}
	}
	if c, err := VerifyAdmin(SignAdmin(priv, "admin", now, 0), []ed25519.PublicKey{pub}, AdminCheck{Role: "admin"}, now); err != nil || c.Role != "admin" {
		t.Fatalf("role token: got %+v, %v", c, err)
	}
}

func TestOpenSSLAdminKey(t *testing.T) {
	testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	key := filepath.Join(dir, "admin.key")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", key).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v: %s", err, out)
	}
	pubOut, err := exec.Command("openssl", "pkey", "-in", key, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := os.ReadFile(key)
	priv, err := ParseAdminPrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseAdminPublicKey(pubOut)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAdmin(SignAdmin(priv, "", time.Now(), 0), []ed25519.PublicKey{pub}, AdminCheck{}, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func FuzzVerify(f *testing.F) {
	s, _ := NewSigner(nil, "", time.Minute)
	tok, _ := s.Issue(time.Now(), sampleSubmod())
	f.Add(tok)
	f.Add("a.b.c")
	signed := tok[:strings.LastIndexByte(tok, '.')]
	f.Fuzz(func(t *testing.T, tok string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		// The signer signed one message: only a token over it can verify.
		if _, err := s.Verify(tok, time.Now()); err == nil {
			if i := strings.LastIndexByte(tok, '.'); i < 0 || tok[:i] != signed {
				t.Fatalf("a token the signer never signed verified: %q", tok)
			}
		}
		if _, err := VerifyAdmin(tok, nil, AdminCheck{}, time.Now()); err == nil {
			t.Fatalf("an admin token verified against no keys: %q", tok)
		}
	})
}

func TestIssueVerifiedMatchesVerify(t *testing.T) {
	s, _ := NewSigner(nil, "", 0)
	now := time.Now()
	tok, iv, err := s.IssueVerified(now, sampleSubmod())
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if iv.Status != v.Status || !iv.Expiry.Equal(v.Expiry) || iv.TeePubKey == nil || *iv.TeePubKey != *v.TeePubKey || fmt.Sprint(iv.Claims) != fmt.Sprint(v.Claims) {
		t.Fatalf("IssueVerified %+v differs from Verify %+v", iv, v)
	}
}
