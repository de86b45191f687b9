package recipients_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/keygen"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pkcs11/pkcs11test"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// BenchmarkSchemes: the per-layer cost of wrapping and unwrapping the layer
// key for one recipient of each key type (milliseconds at most: the wrap
// is once per layer, not per byte).
func BenchmarkSchemes(b *testing.B) {
	ctx := context.Background()
	privopts := []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)
	for _, tc := range []struct{ typ, scheme string }{
		{keygen.MLKEM768, "mlkem:"}, {keygen.ECP256, "jwe:"}, {keygen.RSA3072, "jwe:"},
	} {
		p, err := keygen.Generate(ctx, tc.typ)
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		priv := filepath.Join(dir, "k")
		if err := p.Write(priv, priv+".pub"); err != nil {
			b.Fatal(err)
		}
		ws, err := recipients.ParseRecipients(ctx, []string{tc.scheme + priv + ".pub"}, recipients.Env{})
		if err != nil {
			b.Fatal(err)
		}
		us, err := recipients.ParseKeys(ctx, []string{priv}, recipients.Env{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.typ+"/wrap", func(b *testing.B) {
			for b.Loop() {
				if _, err := ws[0].Wrap(ctx, privopts); err != nil {
					b.Fatal(err)
				}
			}
		})
		entry, _ := ws[0].Wrap(ctx, privopts)
		b.Run(tc.typ+"/unwrap", func(b *testing.B) {
			for b.Loop() {
				if _, err := us[0].Unwrap(ctx, entry); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// pkcs11 on SoftHSM2: every wrap and unwrap loads the module, opens a
	// session and logs in (RSA-2048, OAEP-SHA1, what SoftHSM 2.6 decrypts).
	b.Run("pkcs11-softhsm", func(b *testing.B) {
		tok := pkcs11test.New(b)
		tok.Import(keystest.RSA(b, 0), "k1", "01")
		env := recipients.Env{PKCS11: pkcs11test.Config(), OAEPHash: "sha1"}
		ws, err := recipients.ParseRecipients(ctx, []string{"pkcs11:" + tok.KeyFile("k1.pub.yaml", tok.URI("k1", "01", ""))}, env)
		if err != nil {
			b.Fatal(err)
		}
		us, err := recipients.ParseKeys(ctx, []string{tok.KeyFile("k1.yaml", tok.URI("k1", "01", "pin-value="+pkcs11test.PIN))}, env)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("wrap", func(b *testing.B) {
			for b.Loop() {
				if _, err := ws[0].Wrap(ctx, privopts); err != nil {
					b.Fatal(err)
				}
			}
		})
		entry, err := ws[0].Wrap(ctx, privopts)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("unwrap", func(b *testing.B) {
			for b.Loop() {
				if _, err := us[0].Unwrap(ctx, entry); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
