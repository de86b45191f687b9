package filecrypt_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// FuzzDecrypt feeds hostile files (a host gets them from the provider) to
// both formats, as DecryptFile dispatches them. The key is fixed and every
// authentic file under it holds plain, so the oracle is: whatever
// decrypts, decrypts to plain (no forged or mangled file yields other
// bytes), and every failure is ErrIntegrity or ErrUnsupported. (Seeds are
// made afresh in each fuzz worker with new salts, so they cannot be named.)
func FuzzDecrypt(f *testing.F) {
	key := bytes.Repeat([]byte{7}, filecrypt.KeySize)
	plain := bytes.Repeat([]byte("vm disk "), 300)
	var stream, secl bytes.Buffer
	if _, err := filecrypt.Encrypt(context.Background(), &stream, bytes.NewReader(plain), key); err != nil {
		f.Fatal(err)
	}
	if _, err := filecrypt.EncryptSecL(context.Background(), &secl, bytes.NewReader(plain), key); err != nil {
		f.Fatal(err)
	}
	var back1, back2 bytes.Buffer
	if _, err := filecrypt.Decrypt(context.Background(), &back1, bytes.NewReader(stream.Bytes()), key); err != nil || !bytes.Equal(back1.Bytes(), plain) {
		f.Fatalf("streaming seed does not decrypt: %v", err)
	}
	if _, err := filecrypt.DecryptSecL(context.Background(), &back2, bytes.NewReader(secl.Bytes()), key); err != nil || !bytes.Equal(back2.Bytes(), plain) {
		f.Fatalf("SecL seed does not decrypt: %v", err)
	}
	f.Add(stream.Bytes())
	f.Add(secl.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		var out bytes.Buffer
		var err error
		if filecrypt.IsSecL(in) {
			_, err = filecrypt.DecryptSecL(context.Background(), &out, bytes.NewReader(in), key)
		} else {
			_, err = filecrypt.Decrypt(context.Background(), &out, bytes.NewReader(in), key)
		}
		switch {
		case err == nil && !bytes.Equal(out.Bytes(), plain):
			t.Fatalf("a %d-byte file decrypted to %d bytes that are not the plaintext", len(in), out.Len())
		case err != nil && !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported):
			t.Fatalf("error wraps no sentinel: %v", err)
		}
	})
}
