package recipients_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/containers/ocicrypt/helpers"
	ocijwe "github.com/containers/ocicrypt/keywrap/jwe"
	ocipkcs11 "github.com/containers/ocicrypt/keywrap/pkcs11"
	ocipkcs7 "github.com/containers/ocicrypt/keywrap/pkcs7"

	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pkcs11/pkcs11test"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// TestOcicryptSameArguments feeds the same --recipient/--key strings to
// coffer and to ocicrypt's own CLI helpers (what skopeo uses) and checks each
// side unwraps what the other wrapped.
func TestOcicryptSameArguments(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const pw = "interop-pass"
	blk, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(keystest.RSA(t, 0)), []byte(pw), x509.PEMCipherAES256) //nolint:staticcheck // legacy format under test
	if err != nil {
		t.Fatal(err)
	}
	encKey := keystest.Write(t, f.dir, "interop.enc.pem", pem.EncodeToMemory(blk))
	pwFile := keystest.Write(t, f.dir, "interop.pw", []byte(pw))
	recips := []string{"jwe:" + f.rsaPub, "pkcs7:" + f.rsaCert}

	for name, keySpec := range map[string]string{"pass=": encKey + ":pass=" + pw, "file=": encKey + ":file=" + pwFile} {
		keyArgs := []string{keySpec, f.rsaCert}
		t.Run(name, func(t *testing.T) {
			// coffer wraps, ocicrypt unwraps with its parse of the same --key strings.
			ws, err := recipients.ParseRecipients(ctx, recips, recipients.Env{})
			if err != nil {
				t.Fatal(err)
			}
			cc, err := helpers.CreateDecryptCryptoConfig(keyArgs, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range ws {
				entry, err := w.Wrap(ctx, privopts)
				if err != nil {
					t.Fatal(err)
				}
				var got []byte
				switch w.Scheme() {
				case "jwe":
					got, err = ocijwe.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry)
				case "pkcs7":
					got, err = ocipkcs7.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry)
				}
				if err != nil || !bytes.Equal(got, privopts) {
					t.Errorf("ocicrypt unwrapping coffer's %s: got %q, %v", w.Scheme(), got, err)
				}
			}

			// ocicrypt wraps with its parse of the --recipient strings, coffer unwraps.
			ecc, err := helpers.CreateCryptoConfig(recips, nil)
			if err != nil {
				t.Fatal(err)
			}
			us, err := recipients.ParseKeys(ctx, keyArgs, recipients.Env{})
			if err != nil {
				t.Fatal(err)
			}
			entries := map[string][]byte{}
			if entries["jwe"], err = ocijwe.NewKeyWrapper().WrapKeys(ecc.EncryptConfig, privopts); err != nil {
				t.Fatal(err)
			}
			if entries["pkcs7"], err = ocipkcs7.NewKeyWrapper().WrapKeys(ecc.EncryptConfig, privopts); err != nil {
				t.Fatal(err)
			}
			for s, e := range entries {
				got, err := find(us, s).Unwrap(ctx, e)
				if err != nil || !bytes.Equal(got, privopts) {
					t.Errorf("coffer unwrapping ocicrypt's %s: got %q, %v", s, got, err)
				}
			}
		})
	}
}

// TestOcicryptPKCS11: the same pkcs11 --recipient and --key strings to
// coffer and to ocicrypt's CLI helpers, with the token (SoftHSM2); each
// side unwraps what the other wrapped.
func TestOcicryptPKCS11(t *testing.T) {
	tok := pkcs11test.New(t)
	ctx := context.Background()
	conf := keystest.Write(t, tok.Dir, "ocicrypt.conf", []byte("pkcs11:\n  allowed-module-paths:\n  - "+pkcs11test.Module+"\n"))
	t.Setenv("OCICRYPT_CONFIG", conf)
	t.Setenv("OCICRYPT_OAEP_HASHALG", "sha1")
	tok.Import(keystest.RSA(t, 0), "k1", "01")
	recips := []string{"pkcs11:" + tok.KeyFile("k1.pub.yaml", tok.URI("k1", "01", ""))}
	keyArgs := []string{tok.KeyFile("k1.yaml", tok.URI("k1", "01", "pin-value="+pkcs11test.PIN))}
	env := recipients.Env{PKCS11: pkcs11test.Config(), OAEPHash: "sha1"}

	ws, err := recipients.ParseRecipients(ctx, recips, env)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := ws[0].Wrap(ctx, privopts)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := helpers.CreateDecryptCryptoConfig(keyArgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ocipkcs11.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry); err != nil || !bytes.Equal(got, privopts) {
		t.Errorf("ocicrypt unwrapping coffer's pkcs11 entry: got %q, %v", got, err)
	}

	ecc, err := helpers.CreateCryptoConfig(recips, nil)
	if err != nil {
		t.Fatal(err)
	}
	entry, err = ocipkcs11.NewKeyWrapper().WrapKeys(ecc.EncryptConfig, privopts)
	if err != nil {
		t.Fatal(err)
	}
	us, err := recipients.ParseKeys(ctx, keyArgs, env)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := find(us, "pkcs11").Unwrap(ctx, entry); err != nil || !bytes.Equal(got, privopts) {
		t.Errorf("coffer unwrapping ocicrypt's pkcs11 entry: got %q, %v", got, err)
	}
}
