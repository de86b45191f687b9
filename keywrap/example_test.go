package keywrap_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/spec"
)

// Every scheme is a Wrapper and an Unwrapper: here jwe, wrapping a layer's
// private options for an EC recipient (ECDH-ES+A256KW); an unwrapper without the
// recipient's key says spec.ErrNoKey, so callers try the next one.
func Example() {
	ctx := context.Background()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	var w keywrap.Wrapper
	w, err = jwe.NewWrapper([]jwe.Recipient{{Key: &priv.PublicKey}})
	if err != nil {
		panic(err)
	}
	privopts := []byte(`{"symkey":"…","digest":"sha256:…","cipheroptions":{"nonce":"…"}}`)
	entry, err := w.Wrap(ctx, privopts)
	if err != nil {
		panic(err)
	}
	fmt.Println("annotation:", "org.opencontainers.image.enc.keys."+w.Scheme())

	var u keywrap.Unwrapper
	if u, err = jwe.NewUnwrapper(priv); err != nil {
		panic(err)
	}
	got, err := u.Unwrap(ctx, entry)
	if err != nil {
		panic(err)
	}
	fmt.Println("unwrapped the same options:", string(got) == string(privopts))

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ = jwe.NewUnwrapper(other)
	_, err = u.Unwrap(ctx, entry)
	fmt.Println("another key:", errors.Is(err, spec.ErrNoKey))
	// Output:
	// annotation: org.opencontainers.image.enc.keys.jwe
	// unwrapped the same options: true
	// another key: true
}
