package recipients_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/keygen"
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
}
