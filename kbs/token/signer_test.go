package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

// opaque hides a key behind crypto.Signer, as a PKCS#11 token's key is.
type opaque struct{ k crypto.Signer }

func (o opaque) Public() crypto.PublicKey { return o.k.Public() }
func (o opaque) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.k.Sign(r, d, opts)
}

func TestSignerFromCryptoSigner(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := NewSignerFrom(opaque{k}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := s.Issue(now, Submod{Status: StatusAffirming})
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := NewSigner(k, "", 0)
	if v, err := mem.Verify(tok, now); err != nil || v.Status != StatusAffirming {
		t.Fatalf("token of the opaque signer: got %v, %v", v, err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewSignerFrom(opaque{p384}, "", 0); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("P-384 signer: got %v, want ErrUnsupported", err)
	}
}

func TestSignAdminWith(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	tok, err := SignAdminWith(opaque{priv}, AdminClaims{Role: "r"}, now, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyAdmin(tok, []ed25519.PublicKey{pub}, AdminCheck{}, now)
	if err != nil || c.Role != "r" || c.ID == "" {
		t.Fatalf("got %+v, %v", c, err)
	}
	if tok, _ = SignAdminWith(opaque{priv}, AdminClaims{}, now, 0, true); tok == "" {
		t.Fatal("reusable: no token")
	}
	if c, err = VerifyAdmin(tok, []ed25519.PublicKey{pub}, AdminCheck{}, now); err != nil || c.ID != "" {
		t.Fatalf("reusable: got %+v, %v, want no jti", c, err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := SignAdminWith(ec, AdminClaims{}, now, 0, false); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("P-256 admin key: got %v, want ErrUnsupported", err)
	}
}
