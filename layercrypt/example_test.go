package layercrypt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/coffer-dev/coffer/layercrypt"
	"github.com/coffer-dev/coffer/spec"
)

// Encrypt a layer blob, then decrypt it with the HMAC from the public
// options; a flipped ciphertext byte fails authentication.
func Example() {
	ctx := context.Background()
	k, err := layercrypt.NewKey()
	if err != nil {
		panic(err)
	}
	blob := []byte("a layer's tar bytes, compressed or not")
	var ct bytes.Buffer
	sealed, err := layercrypt.Encrypt(ctx, &ct, bytes.NewReader(blob), k)
	if err != nil {
		panic(err)
	}
	fmt.Println("ciphertext as long as the blob:", sealed.Size == int64(len(blob)) && ct.Len() == len(blob))

	var pt bytes.Buffer
	if _, err := layercrypt.Decrypt(ctx, &pt, bytes.NewReader(ct.Bytes()), k, sealed.HMAC[:]); err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", pt.Bytes())

	tampered := bytes.Clone(ct.Bytes())
	tampered[0] ^= 1
	_, err = layercrypt.Decrypt(ctx, &bytes.Buffer{}, bytes.NewReader(tampered), k, sealed.HMAC[:])
	fmt.Println("tampered:", errors.Is(err, spec.ErrIntegrity))
	// Output:
	// ciphertext as long as the blob: true
	// a layer's tar bytes, compressed or not
	// tampered: true
}
