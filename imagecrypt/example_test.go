package imagecrypt_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/transport"
)

// Encrypt an image between two OCI layouts for an RSA recipient, inspect
// it, then decrypt it back: what coffer encrypt, inspect and decrypt do.
func ExampleCopy() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		panic(err)
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	w, _ := jwe.NewWrapper([]jwe.Recipient{{Key: &key.PublicKey}})
	u, _ := jwe.NewUnwrapper(key)
	ref := func(name string) transport.Reference {
		r, err := transport.Parse("oci:" + filepath.Join(dir, name) + ":v1")
		if err != nil {
			panic(err)
		}
		return r
	}

	n, err := imagecrypt.Copy(ctx, ref("app"), ref("enc"), imagecrypt.EncryptFor(w), nil, imagecrypt.WithLayers(0))
	fmt.Println("encrypted layers:", n, err)

	a, closeA, _ := transport.Read(ctx, ref("enc"))
	rep, _ := imagecrypt.Inspect(ctx, imagecrypt.Artifact(a), nil)
	closeA()
	for _, l := range rep.Manifests[0].Layers {
		fmt.Println(l.MediaType, l.Encrypted)
	}

	n, err = imagecrypt.Copy(ctx, ref("enc"), ref("plain"), imagecrypt.Decrypt, nil, imagecrypt.WithKeys(u))
	fmt.Println("decrypted layers:", n, err)
	// Output:
	// encrypted layers: 1 <nil>
	// application/vnd.oci.image.layer.v1.tar+gzip+encrypted true
	// application/vnd.oci.image.layer.v1.tar+gzip false
	// decrypted layers: 1 <nil>
}

// Rotate the recipients of an encrypted image: the blobs stay, only the
// wrapped keys change, so the old recipient can no longer open the new copy.
func ExampleRekeyFor() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	oldKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	newKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	oldW, _ := jwe.NewWrapper([]jwe.Recipient{{Key: &oldKey.PublicKey}})
	newW, _ := jwe.NewWrapper([]jwe.Recipient{{Key: &newKey.PublicKey}})
	oldU, _ := jwe.NewUnwrapper(oldKey)
	ref := func(name string) transport.Reference {
		r, _ := transport.Parse("oci:" + filepath.Join(dir, name) + ":v1")
		return r
	}
	_, _ = imagecrypt.Copy(ctx, ref("app"), ref("enc"), imagecrypt.EncryptFor(oldW), nil)
	n, err := imagecrypt.Copy(ctx, ref("enc"), ref("rotated"), imagecrypt.RekeyFor(newW), nil, imagecrypt.WithKeys(oldU))
	fmt.Println("rekeyed layers:", n, err)
	_, err = imagecrypt.Copy(ctx, ref("rotated"), ref("plain"), imagecrypt.Decrypt, nil, imagecrypt.WithKeys(oldU))
	fmt.Println("old key opens the rotated image:", err == nil)
	// Output:
	// rekeyed layers: 2 <nil>
	// old key opens the rotated image: false
}

// Describe an encrypted image without any key: which layers are encrypted,
// with which cipher, and for which recipients (what coffer inspect prints).
func ExampleInspect() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	w, _ := jwe.NewWrapper([]jwe.Recipient{{Key: &key.PublicKey}})
	src, _ := transport.Parse("oci:" + filepath.Join(dir, "app") + ":v1")
	enc, _ := transport.Parse("oci:" + filepath.Join(dir, "enc") + ":v1")
	if _, err := imagecrypt.Copy(ctx, src, enc, imagecrypt.EncryptFor(w), nil, imagecrypt.WithLayers(0)); err != nil {
		panic(err)
	}

	a, closeA, _ := transport.Read(ctx, enc)
	defer closeA()
	rep, err := imagecrypt.Inspect(ctx, imagecrypt.Artifact(a), recipients.Describe)
	if err != nil {
		panic(err)
	}
	for _, l := range rep.Manifests[0].Layers {
		fmt.Println("layer", l.Index, "encrypted:", l.Encrypted, l.Cipher)
		for _, s := range l.Schemes {
			fmt.Println("  ", s.Scheme, s.Entries, s.Recipients)
		}
	}
	// Output:
	// layer 0 encrypted: true AES_256_CTR_HMAC_SHA256
	//    jwe 1 [alg=RSA-OAEP enc=A256GCM]
	// layer 1 encrypted: false
}
