package coffer_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/pkg/coffer"
)

// broker starts an in-process broker that accepts the sample TEE and
// releases every resource to it, and returns its URL and admin key.
func broker(ctx context.Context) (string, ed25519.PrivateKey, func()) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := server.New(ctx, server.WithAdminKeys(pub), server.WithLogger(slog.New(slog.DiscardHandler)),
		server.WithVerifiers(attest.New(attest.Config{AllowSample: true})))
	if err != nil {
		panic(err)
	}
	if err := srv.Policy().SetResourcePolicy(ctx, policy.ResourceAllowAll); err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	return hs.URL, priv, func() { hs.Close(); srv.Close() }
}

var quiet = coffer.WithLogger(slog.New(slog.DiscardHandler))

// Encrypt an image for an RSA recipient and decrypt it back, between OCI
// layouts: coffer encrypt --recipient and coffer decrypt --key.
func ExampleEncrypt() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	w, _ := jwe.NewWrapper([]jwe.Recipient{{Key: &key.PublicKey}})
	u, _ := jwe.NewUnwrapper(key)
	oci := func(name string) string { return "oci:" + filepath.Join(dir, name) + ":v1" }

	res, err := coffer.Encrypt(ctx, oci("app"), oci("enc"), coffer.WithRecipients(w), quiet)
	fmt.Println("encrypted layers:", res.Layers, err)
	n, err := coffer.Decrypt(ctx, oci("enc"), oci("plain"), coffer.WithKeys(u), quiet)
	fmt.Println("decrypted layers:", n, err)
	_, err = coffer.Decrypt(ctx, oci("enc"), oci("none"), quiet)
	fmt.Println(err)
	// Output:
	// encrypted layers: 2 <nil>
	// decrypted layers: 2 <nil>
	// no keys: give private keys (WithKeys) or a broker (WithKBS)
}

// Encrypt for a key broker, then pull after attestation: coffer encrypt
// --kbs --admin-key --key-id and coffer pull --kbs. The broker URL may
// list replicas ("URL,URL"); the KEK is stored only once the image is
// written.
func ExamplePull() {
	ctx := context.Background()
	url, adminKey, stop := broker(ctx)
	defer stop()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	src, dst := "oci:"+filepath.Join(dir, "app")+":v1", "oci:"+filepath.Join(dir, "enc")+":v1"

	res, err := coffer.Encrypt(ctx, src, dst, coffer.WithKBS(url), coffer.WithAdminKey(adminKey),
		coffer.WithKeyID("default/image_key/app"), quiet)
	fmt.Println(res.KID, err)

	// Again at the same key id: refused before anything is written.
	_, err = coffer.Encrypt(ctx, src, dst, coffer.WithKBS(url), coffer.WithAdminKey(adminKey), coffer.WithKeyID("default/image_key/app"), quiet)
	fmt.Println(strings.Contains(err.Error(), "a key exists"))

	rootfs := filepath.Join(dir, "rootfs")
	err = coffer.Pull(ctx, dst, rootfs, coffer.WithKBS(url+","+url), coffer.WithAttester(evidence.Sample{}), quiet)
	f, _ := os.Open(filepath.Join(rootfs, "secret"))
	b, _ := io.ReadAll(f)
	f.Close()
	fmt.Println(err, strings.TrimSpace(string(b)) == demo.Secret)
	// Output:
	// kbs:///default/image_key/app <nil>
	// true
	// <nil> true
}

// Pin an image's manifest digest in the broker while encrypting it
// (default for a docker:// destination; asked for here), then verify it
// without pulling: coffer encrypt --pin and coffer verify --kbs.
func ExampleVerify() {
	ctx := context.Background()
	url, adminKey, stop := broker(ctx)
	defer stop()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	src, dst := "oci:"+filepath.Join(dir, "app")+":v1", "oci:"+filepath.Join(dir, "enc")+":v1"

	_, err := coffer.Encrypt(ctx, src, dst, coffer.WithKBS(url), coffer.WithAdminKey(adminKey),
		coffer.WithKeyID("default/image_key/app"), coffer.WithPin(true), quiet)
	fmt.Println(err)
	res, err := coffer.Verify(ctx, dst, coffer.WithKBS(url), coffer.WithAttester(evidence.Sample{}), quiet)
	fmt.Println(err, len(res.Vouched), strings.HasPrefix(res.Vouched[0], "digest pinned in the broker"))
	_, err = coffer.Verify(ctx, src, quiet) // nothing vouches for the plain image
	fmt.Println(err != nil)
	// Output:
	// <nil>
	// <nil> 1 true
	// true
}

// Decrypt with the broker's key after attestation (coffer decrypt has
// local keys only; the library takes either).
func ExampleDecrypt() {
	ctx := context.Background()
	url, adminKey, stop := broker(ctx)
	defer stop()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	oci := func(name string) string { return "oci:" + filepath.Join(dir, name) + ":v1" }
	_, _ = coffer.Encrypt(ctx, oci("app"), oci("enc"), coffer.WithKBS(url), coffer.WithAdminKey(adminKey), coffer.WithKeyID("kbs:///default/image_key/app"), quiet)

	n, err := coffer.Decrypt(ctx, oci("enc"), oci("plain"), coffer.WithKBS(url), coffer.WithAttester(evidence.Sample{}), quiet)
	fmt.Println("decrypted layers:", n, err)
	// Output:
	// decrypted layers: 2 <nil>
}

func ExampleSplitURLs() {
	fmt.Printf("%q\n", coffer.SplitURLs("https://kbs-a:8080, https://kbs-b:8080,"))
	// Output:
	// ["https://kbs-a:8080" "https://kbs-b:8080"]
}
