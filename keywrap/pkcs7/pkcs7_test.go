package pkcs7_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containers/ocicrypt/config"
	ocipkcs7 "github.com/containers/ocicrypt/keywrap/pkcs7"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pkcs7"
	"github.com/coffer-dev/coffer/spec"
)

var privopts = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:00","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)

func wrap(t *testing.T, certs ...*x509.Certificate) []byte {
	t.Helper()
	w, err := pkcs7.NewWrapper(certs)
	if err != nil {
		t.Fatal(err)
	}
	if w.Scheme() != "pkcs7" {
		t.Fatalf("scheme %q", w.Scheme())
	}
	out, err := w.Wrap(context.Background(), privopts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func unwrap(t *testing.T, entry []byte, ks []crypto.PrivateKey, certs []*x509.Certificate) ([]byte, error) {
	t.Helper()
	u, err := pkcs7.NewUnwrapper(ks, certs)
	if err != nil {
		t.Fatal(err)
	}
	return u.Unwrap(context.Background(), entry)
}

var (
	oidAES128GCM = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidRSA       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
)

// algorithms returns the content encryption and key transport OIDs found
// in the DER (a structural check of library defaults, as ocicrypt uses them).
func hasOID(der []byte, oid asn1.ObjectIdentifier) bool {
	enc, _ := asn1.Marshal(oid)
	return bytes.Contains(der, enc)
}

func TestRoundTripAndDescribe(t *testing.T) {
	k0, k1 := keystest.RSA(t, 0), keystest.RSA(t, 1)
	c0, _ := keystest.Cert(t, k0, "alice")
	c1, _ := keystest.Cert(t, k1, "bob")
	entry := wrap(t, c0, c1)
	if !hasOID(entry, oidAES128GCM) || !hasOID(entry, oidRSA) {
		t.Error("entry does not use AES-128-GCM content encryption with RSA PKCS#1 v1.5 key transport")
	}
	for i, kc := range []struct {
		k crypto.PrivateKey
		c *x509.Certificate
	}{{k0, c0}, {k1, c1}} {
		got, err := unwrap(t, entry, []crypto.PrivateKey{kc.k}, []*x509.Certificate{kc.c})
		if err != nil || !bytes.Equal(got, privopts) {
			t.Errorf("recipient %d: got %q, %v", i, got, err)
		}
	}
	// Keys and certs in any order, extra unrelated ones.
	other := keystest.RSA(t, 2)
	oc, _ := keystest.Cert(t, other, "carol")
	got, err := unwrap(t, entry, []crypto.PrivateKey{other, k1}, []*x509.Certificate{oc, c0, c1})
	if err != nil || !bytes.Equal(got, privopts) {
		t.Errorf("mixed: got %q, %v", got, err)
	}
	lines, err := pkcs7.Describe(entry)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("issuer=%q serial=0x%s", "CN=alice,O=coffer tests", strings.ToUpper(c0.SerialNumber.Text(16))),
		fmt.Sprintf("issuer=%q serial=0x%s", "CN=bob,O=coffer tests", strings.ToUpper(c1.SerialNumber.Text(16))),
	}
	slices.Sort(lines)
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("Describe: got %q, want %q", lines, want)
	}
}

func TestNoKeyAndMissingCert(t *testing.T) {
	k0, k1 := keystest.RSA(t, 0), keystest.RSA(t, 1)
	c0, _ := keystest.Cert(t, k0, "alice")
	c1, _ := keystest.Cert(t, k1, "bob")
	entry := wrap(t, c0)

	// Right key, no certificate: the clear message, not ErrNoKey.
	_, err := unwrap(t, entry, []crypto.PrivateKey{k0}, nil)
	if !errors.Is(err, pkcs7.ErrNeedCertificate) || errors.Is(err, spec.ErrNoKey) {
		t.Fatalf("missing cert: got %v", err)
	}
	if got, want := err.Error(), "pkcs7 decryption needs the recipient certificate: pass --key cert.pem too"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Another recipient's key and cert.
	if _, err := unwrap(t, entry, []crypto.PrivateKey{k1}, []*x509.Certificate{c1}); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("wrong key: got %v, want ErrNoKey", err)
	}
	// Right cert but the wrong key: the pair does not form.
	if _, err := unwrap(t, entry, []crypto.PrivateKey{k1}, []*x509.Certificate{c0}); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("cert without its key: got %v, want ErrNoKey", err)
	}
	// A cert alone.
	if _, err := unwrap(t, entry, nil, []*x509.Certificate{c0}); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("cert alone: got %v, want ErrNoKey", err)
	}
}

func TestRejects(t *testing.T) {
	ek := keystest.EC(t, elliptic.P256())
	ec, _ := keystest.Cert(t, ek, "ec")
	if _, err := pkcs7.NewWrapper([]*x509.Certificate{ec}); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("EC certificate: got %v, want ErrUnsupported", err)
	}
	if _, err := pkcs7.NewUnwrapper([]crypto.PrivateKey{ek}, nil); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("EC key: got %v, want ErrUnsupported", err)
	}
	if pkcs7.CanUse(ek) || !pkcs7.CanUse(keystest.RSA(t, 0)) {
		t.Error("CanUse: wrong answer")
	}
	k0 := keystest.RSA(t, 0)
	c0, _ := keystest.Cert(t, k0, "alice")
	for _, s := range [][]byte{nil, []byte("junk"), {0x30, 0x03, 0x06, 0x01, 0x00}} {
		if _, err := unwrap(t, s, []crypto.PrivateKey{k0}, []*x509.Certificate{c0}); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%x: got %v, want ErrUnsupported", s, err)
		}
		if _, err := pkcs7.Describe(s); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("Describe %x: got %v, want ErrUnsupported", s, err)
		}
	}
	// Tampered content: the GCM tag fails.
	entry := wrap(t, c0)
	bad := bytes.Clone(entry)
	bad[len(bad)-3] ^= 0xff
	if _, err := unwrap(t, bad, []crypto.PrivateKey{k0}, []*x509.Certificate{c0}); err == nil || errors.Is(err, spec.ErrNoKey) {
		t.Errorf("tampered: got %v, want a decryption error", err)
	}
}

func TestOcicryptInterop(t *testing.T) {
	k := keystest.RSA(t, 0)
	c, certDER := keystest.Cert(t, k, "interop")
	certPEM := keystest.PEM("CERTIFICATE", certDER)
	keyPEM := keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, k))

	t.Run("ocicrypt wraps, coffer unwraps", func(t *testing.T) {
		cc, err := config.EncryptWithPkcs7([][]byte{certPEM})
		if err != nil {
			t.Fatal(err)
		}
		entry, err := ocipkcs7.NewKeyWrapper().WrapKeys(cc.EncryptConfig, privopts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := unwrap(t, entry, []crypto.PrivateKey{k}, []*x509.Certificate{c})
		if err != nil || !bytes.Equal(got, privopts) {
			t.Fatalf("got %q, %v", got, err)
		}
		lines, err := pkcs7.Describe(entry)
		if err != nil || len(lines) != 1 || !strings.Contains(lines[0], "CN=interop") {
			t.Errorf("Describe: %q, %v", lines, err)
		}
	})
	t.Run("coffer wraps, ocicrypt unwraps", func(t *testing.T) {
		entry := wrap(t, c)
		dk, err := config.DecryptWithPrivKeys([][]byte{keyPEM}, [][]byte{nil})
		if err != nil {
			t.Fatal(err)
		}
		dc, err := config.DecryptWithX509s([][]byte{certPEM})
		if err != nil {
			t.Fatal(err)
		}
		cc := config.CombineCryptoConfigs([]config.CryptoConfig{dk, dc})
		got, err := ocipkcs7.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry)
		if err != nil || !bytes.Equal(got, privopts) {
			t.Fatalf("got %q, %v", got, err)
		}
	})
}

func FuzzDescribe(f *testing.F) {
	k := keystest.RSA(f, 0)
	c, _ := keystest.Cert(f, k, "fuzz")
	w, err := pkcs7.NewWrapper([]*x509.Certificate{c})
	if err != nil {
		f.Fatal(err)
	}
	entry, _ := w.Wrap(context.Background(), privopts)
	f.Add(entry)
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	u, _ := pkcs7.NewUnwrapper([]crypto.PrivateKey{k}, []*x509.Certificate{c})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		lines, err := pkcs7.Describe(data)
		if err == nil && len(lines) == 0 {
			t.Fatal("no error and no recipients")
		}
		if _, uerr := u.Unwrap(context.Background(), data); uerr == nil && err != nil {
			t.Fatalf("Unwrap accepted an entry Describe rejects: %v", err)
		}
	})
}
