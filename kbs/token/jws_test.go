package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

// SignJWS/VerifyJWS: the pinned key and the header type decide; a token
// of another type, another key, or with a changed payload is refused.
// LoadVerifyKey takes a PUBLIC KEY or CERTIFICATE PEM of a P-256 key.
func TestJWSAndVerifyKey(t *testing.T) {
	t.Parallel()
	s, _ := NewSigner(nil, "", 0)
	other, _ := NewSigner(nil, "", 0)
	tok, err := s.SignJWS("x+jwt", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := VerifyJWS(tok, "x+jwt", []*ecdsa.PublicKey{other.PublicKey(), s.PublicKey()}); err != nil || string(p) != `{"a":1}` {
		t.Fatalf("VerifyJWS = %q, %v", p, err)
	}
	parts := strings.Split(tok, ".")
	for name, bad := range map[string]struct {
		tok, typ string
		keys     []*ecdsa.PublicKey
	}{
		"other key":       {tok, "x+jwt", []*ecdsa.PublicKey{other.PublicKey()}},
		"other type":      {tok, "y+jwt", []*ecdsa.PublicKey{s.PublicKey()}},
		"changed payload": {parts[0] + ".eyJhIjoyfQ." + parts[2], "x+jwt", []*ecdsa.PublicKey{s.PublicKey()}},
		"an EAR token":    {mustIssueEAR(t, s), "x+jwt", []*ecdsa.PublicKey{s.PublicKey()}},
		"no keys":         {tok, "x+jwt", nil},
		"oversized":       {strings.Repeat("a", MaxJWS+1), "x+jwt", []*ecdsa.PublicKey{s.PublicKey()}},
	} {
		if _, err := VerifyJWS(bad.tok, bad.typ, bad.keys); !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("%s: err = %v, want ErrIntegrity", name, err)
		}
	}
	der, _ := x509.MarshalPKIXPublicKey(s.PublicKey())
	if k, err := LoadVerifyKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err != nil || !k.Equal(s.PublicKey()) {
		t.Errorf("PUBLIC KEY: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kbs"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cder, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.PublicKey(), s.key)
	if k, err := LoadVerifyKey(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cder})); err != nil || !k.Equal(s.PublicKey()) {
		t.Errorf("CERTIFICATE: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	d384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	for name, b := range map[string][]byte{
		"P-384":       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: d384}),
		"private key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"no PEM":      []byte("nope"),
	} {
		if _, err := LoadVerifyKey(b); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
		}
	}
}

func mustIssueEAR(t *testing.T, s *Signer) string {
	tok, err := s.Issue(time.Now(), Submod{Status: "affirming"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
