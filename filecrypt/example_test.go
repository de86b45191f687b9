package filecrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/spec"
)

// Encrypt 3 MiB in 1 MiB segments and open it again; a truncated copy
// (its last segment dropped) is refused.
func Example() {
	ctx := context.Background()
	key := make([]byte, filecrypt.KeySize)
	rand.Read(key)
	plain := bytes.Repeat([]byte("disk"), 3<<18)

	var enc bytes.Buffer
	res, _ := filecrypt.Encrypt(ctx, &enc, bytes.NewReader(plain), key)
	fmt.Println(res.PlainSize, res.CipherSize, len(res.Digest))

	var out bytes.Buffer
	_, err := filecrypt.Decrypt(ctx, &out, bytes.NewReader(enc.Bytes()), key)
	fmt.Println(bytes.Equal(out.Bytes(), plain), err)

	_, err = filecrypt.Decrypt(ctx, &out, bytes.NewReader(enc.Bytes()[:2*filecrypt.SegmentSize]), key)
	fmt.Println(errors.Is(err, spec.ErrIntegrity))
	// Output:
	// 3145728 3145832 32
	// true <nil>
	// true
}
