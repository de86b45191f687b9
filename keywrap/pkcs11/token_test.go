package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	ociconfig "github.com/containers/ocicrypt/config"
	ocipkcs11 "github.com/containers/ocicrypt/crypto/pkcs11"
	ociwrap "github.com/containers/ocicrypt/keywrap/pkcs11"

	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
	"github.com/coffer-dev/coffer/keywrap/pkcs11/pkcs11test"
	"github.com/coffer-dev/coffer/spec"
)

var privopts = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)

type fixture struct {
	tok      *pkcs11test.Token
	rsa      *rsa.PrivateKey
	key      *pkcs11.Key // k1, with its PIN
	keyYAML  []byte
	pubYAML  []byte // k1 without a PIN (a recipient)
	otherKey *pkcs11.Key
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	tok := pkcs11test.New(t)
	f := &fixture{tok: tok, rsa: keystest.RSA(t, 0)}
	tok.Import(f.rsa, "k1", "01")
	tok.Import(keystest.RSA(t, 1), "k2", "02")
	f.keyYAML = tok.KeyYAML(tok.URI("k1", "01", "pin-value="+pkcs11test.PIN))
	f.pubYAML = tok.KeyYAML(tok.URI("k1", "01", ""))
	f.key = mustKey(t, f.keyYAML)
	f.otherKey = mustKey(t, tok.KeyYAML(tok.URI("k2", "02", "pin-value="+pkcs11test.PIN)))
	return f
}

func mustKey(t testing.TB, data []byte) *pkcs11.Key {
	t.Helper()
	k, err := pkcs11.ParseKeyFile(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func unwrap(t *testing.T, cfg pkcs11.Config, entry []byte, keys ...*pkcs11.Key) ([]byte, error) {
	t.Helper()
	u, err := pkcs11.NewUnwrapper(cfg, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return u.Unwrap(context.Background(), entry)
}

// TestTokenRoundTrip: software and token recipients, opened on the token
// by the right key only.
func TestTokenRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cfg := pkcs11test.Config()
	for _, tc := range []struct {
		name string
		r    pkcs11.Recipient
	}{
		{"public key", pkcs11.Recipient{Public: &f.rsa.PublicKey}},
		{"token public key object", pkcs11.Recipient{Key: mustKey(t, f.pubYAML)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := pkcs11.NewWrapper(cfg, pkcs11.SHA1, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			entry, err := w.Wrap(ctx, privopts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unwrap(t, cfg, entry, f.otherKey, f.key)
			if err != nil || !bytes.Equal(got, privopts) {
				t.Fatalf("unwrap: got %q, %v", got, err)
			}
			if _, err := unwrap(t, cfg, entry, f.otherKey); !errors.Is(err, spec.ErrNoKey) {
				t.Fatalf("unwrap with the other key: got %v, want ErrNoKey", err)
			}
			lines, err := pkcs11.Describe(entry)
			if err != nil || len(lines) != 1 || lines[0] != "pkcs11 RSA-OAEP-SHA1 2048-bit" {
				t.Errorf("Describe: got %q, %v", lines, err)
			}
		})
	}
}

// TestTokenSHA256: SoftHSM 2.6 does not do OAEP with SHA-256; coffer says
// so in one line naming the way out, and a token that can is used.
func TestTokenSHA256(t *testing.T) {
	f := newFixture(t)
	cfg := pkcs11test.Config()
	// RSA-2048 holds 190 bytes under OAEP-SHA256: too few for the options.
	w, err := pkcs11.NewWrapper(cfg, pkcs11.SHA256, pkcs11.Recipient{Public: &f.rsa.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wrap(context.Background(), privopts); !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "use a 3072-bit or larger key") {
		t.Fatalf("SHA-256 under RSA-2048: got %v", err)
	}
	big, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	f.tok.Import(big, "k3", "03")
	w, err = pkcs11.NewWrapper(cfg, pkcs11.SHA256, pkcs11.Recipient{Public: &big.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := w.Wrap(context.Background(), privopts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := unwrap(t, cfg, entry, mustKey(t, f.tok.KeyYAML(f.tok.URI("k3", "03", "pin-value="+pkcs11test.PIN))))
	if err == nil {
		if !bytes.Equal(got, privopts) {
			t.Fatalf("got %q", got)
		}
		return // a SoftHSM that does SHA-256
	}
	if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "OCICRYPT_OAEP_HASHALG=sha1") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %q, want one ErrUnsupported line naming OCICRYPT_OAEP_HASHALG=sha1", err)
	}
	t.Logf("SoftHSM: %v", err)
}

// TestTokenErrors: one line each, naming what is wrong, never the PIN.
func TestTokenErrors(t *testing.T) {
	f := newFixture(t)
	cfg := pkcs11test.Config()
	w, _ := pkcs11.NewWrapper(cfg, pkcs11.SHA1, pkcs11.Recipient{Public: &f.rsa.PublicKey})
	entry, err := w.Wrap(context.Background(), privopts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, uri string
		cfg       pkcs11.Config
		want      error
		msg       string
	}{
		{"wrong PIN", f.tok.URI("k1", "01", "pin-value=9876"), cfg, spec.ErrUnauthorized,
			`pkcs11: token "coffer" refused the PIN (CKR_PIN_INCORRECT)`},
		{"missing object", f.tok.URI("k9", "09", "pin-value="+pkcs11test.PIN), cfg, spec.ErrNotFound,
			`pkcs11: token "coffer" has no private key object="k9" id=%09`},
		{"no PIN", f.tok.URI("k1", "01", ""), cfg, spec.ErrUnauthorized, "has no PIN"},
		{"module not allowed", f.tok.URI("k1", "01", "pin-value="+pkcs11test.PIN), pkcs11.Config{}, spec.ErrPolicyDenied,
			"is not allowed by policy (allow it in OCICRYPT_CONFIG"},
		{"no such token", strings.Replace(f.tok.URI("k1", "01", "pin-value="+pkcs11test.PIN), "token=coffer", "token=other", 1), cfg, spec.ErrNotFound,
			`pkcs11: no token "other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := mustKey(t, f.tok.KeyYAML(tc.uri))
			_, err := unwrap(t, tc.cfg, entry, k)
			if err == nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "9876") || strings.Contains(err.Error(), pkcs11test.PIN) {
				t.Errorf("error is not one line without the PIN: %q", err)
			}
			if errors.Is(err, spec.ErrNoKey) {
				t.Errorf("a token that could not be asked is not ErrNoKey: %v", err)
			}
		})
	}
}

// TestOcicryptInterop: coffer wraps, ocicrypt's pkcs11 key wrapper unwraps
// with the token; ocicrypt wraps (public key and token recipients), coffer
// unwraps with the token.
func TestOcicryptInterop(t *testing.T) {
	f := newFixture(t)
	t.Setenv("OCICRYPT_OAEP_HASHALG", "sha1") // what SoftHSM 2.6 decrypts
	ctx := context.Background()
	cfg := pkcs11test.Config()
	ocicfg := &ocipkcs11.Pkcs11Config{AllowedModulePaths: cfg.AllowedModulePaths}

	w, err := pkcs11.NewWrapper(cfg, pkcs11.SHA1, pkcs11.Recipient{Key: mustKey(t, f.pubYAML)}, pkcs11.Recipient{Public: &keystest.RSA(t, 1).PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := w.Wrap(ctx, privopts)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := ociconfig.DecryptWithPkcs11Yaml(ocicfg, [][]byte{f.keyYAML})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ociwrap.NewKeyWrapper().UnwrapKey(dc.DecryptConfig, entry)
	if err != nil || !bytes.Equal(got, privopts) {
		t.Fatalf("ocicrypt unwrapping coffer's entry: got %q, %v", got, err)
	}

	ec, err := ociconfig.EncryptWithPkcs11(ocicfg, [][]byte{keystest.PEM("PUBLIC KEY", keystest.PKIX(t, &keystest.RSA(t, 1).PublicKey))}, [][]byte{f.pubYAML})
	if err != nil {
		t.Fatal(err)
	}
	entry, err = ociwrap.NewKeyWrapper().WrapKeys(ec.EncryptConfig, privopts)
	if err != nil {
		t.Fatal(err)
	}
	got, err = unwrap(t, cfg, entry, f.key)
	if err != nil || !bytes.Equal(got, privopts) {
		t.Fatalf("coffer unwrapping ocicrypt's entry: got %q, %v", got, err)
	}
	if lines, err := pkcs11.Describe(entry); err != nil || len(lines) != 2 {
		t.Errorf("Describe ocicrypt's entry: %q, %v", lines, err)
	}
}
