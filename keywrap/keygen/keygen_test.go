package keygen

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/spec"
)

func TestGenerateWriteAndUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, typ := range Types {
		p, err := Generate(ctx, typ)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		priv, pub := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
		if err := p.Write(priv, pub); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(priv); st.Mode().Perm() != 0o600 {
			t.Errorf("%s: private key mode %04o", typ, st.Mode().Perm())
		}
		// The files are what the recipient schemes read.
		scheme := "jwe:"
		if typ == MLKEM768 {
			scheme = "mlkem:"
		}
		if _, err := recipients.ParseRecipients(ctx, []string{scheme + pub}, recipients.Env{}); err != nil {
			t.Errorf("%s: recipient %s: %v", typ, scheme, err)
		}
		if _, err := recipients.ParseKeys(ctx, []string{priv}, recipients.Env{}); err != nil {
			t.Errorf("%s: key: %v", typ, err)
		}
		// Never overwritten: the old key stays.
		again, _ := Generate(ctx, typ)
		if err := again.Write(priv, filepath.Join(dir, "other.pub")); !errors.Is(err, spec.ErrExists) {
			t.Errorf("%s: overwrite: %v", typ, err)
		}
		if got, _ := os.ReadFile(priv); !bytes.Equal(got, p.Private) {
			t.Errorf("%s: private key changed", typ)
		}
		if _, err := os.Stat(filepath.Join(dir, "other.pub")); err == nil {
			t.Errorf("%s: refused write left a public key", typ)
		}
	}
	if _, err := Generate(ctx, "dsa"); err == nil {
		t.Error("unknown type accepted")
	}
}
