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

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// chain returns a CA (PEM) and a Signer whose tokens carry a leaf the CA issued.
func chainedSigner(t testing.TB, notAfter time.Time) ([]byte, *Signer) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "as"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}, ca, &key.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(leafDER)
	s, err := NewSigner(key, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCertChain([]*x509.Certificate{leaf, ca}); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), s
}

func TestTrustedIssuers(t *testing.T) {
	now := time.Now()
	caPEM, s := chainedSigner(t, now.Add(time.Hour))
	is, err := NewTrustedIssuers(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Issue(now, Submod{Status: StatusAffirming})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := is.Verify(tok, now); err != nil || v.Status != StatusAffirming {
		t.Fatalf("Verify: %v %v", v, err)
	}
	_, other := chainedSigner(t, now.Add(time.Hour))
	otherTok, _ := other.Issue(now, Submod{Status: StatusAffirming})
	parts := strings.Split(tok, ".")
	op := strings.Split(otherTok, ".")
	for name, bad := range map[string]string{
		"untrusted issuer":        otherTok,
		"foreign signature":       parts[0] + "." + parts[1] + "." + op[2],
		"header of another chain": op[0] + "." + parts[1] + "." + parts[2],
		"no x5c":                  strings.Join(strings.Split(mustIssue(t, newPlainSigner(t), now), ".")[:3], "."),
	} {
		if _, err := is.Verify(bad, now); !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("%s: %v, want ErrIntegrity", name, err)
		}
	}
	// The chain is judged at the verification time.
	if _, err := is.Verify(tok, now.Add(2*time.Hour)); err == nil {
		t.Error("expired chain accepted")
	}
	if _, err := NewTrustedIssuers([]byte("no pem")); err == nil {
		t.Error("empty trust accepted")
	}
}

func newPlainSigner(t testing.TB) *Signer {
	s, err := NewSigner(nil, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustIssue(t testing.TB, s *Signer, now time.Time) string {
	tok, err := s.Issue(now, Submod{Status: StatusAffirming})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func FuzzTrustedIssuers(f *testing.F) {
	now := time.Now()
	caPEM, s := chainedSigner(f, now.Add(time.Hour))
	is, err := NewTrustedIssuers(caPEM)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mustIssue(f, s, now))
	f.Add("e30.e30.AA")
	f.Fuzz(func(t *testing.T, tok string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if v, err := is.Verify(tok, now); err == nil && v == nil {
			t.Fatal("nil result without an error")
		}
	})
}
