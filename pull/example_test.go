package pull_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/transport"
)

// The whole flow in one process: a minimal broker (server), the owner
// registering a key with the admin client and encrypting with it, and the
// trusted side pulling through the RCAR client after attestation. The
// sample TEE stands in for hardware here; a real broker refuses it.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-example-")
	defer os.RemoveAll(dir)

	// A broker on loopback that accepts the sample TEE and releases to any token.
	adminPub, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := server.New(ctx, server.WithAdminKeys(adminPub), server.WithLogger(slog.New(slog.DiscardHandler)),
		server.WithVerifiers(attest.New(attest.Config{AllowSample: true})))
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	// Owner: register a KEK in the broker and encrypt the image's first layer with it.
	admin, _ := adminclient.New(hs.URL, adminKey)
	_ = admin.SetResourcePolicy(ctx, []byte(policy.ResourceAllowAll))
	kek, kid, err := admin.RegisterKEK(ctx, "default/image_key/app", false)
	if err != nil {
		panic(err)
	}
	w, _ := aa.NewWrapper(kek, kid)
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	src, _ := transport.Parse("oci:" + filepath.Join(dir, "app") + ":v1")
	enc, _ := transport.Parse("oci:" + filepath.Join(dir, "enc") + ":v1")
	if _, err := imagecrypt.Copy(ctx, src, enc, imagecrypt.EncryptFor(w), nil, imagecrypt.WithLayers(0)); err != nil {
		panic(err)
	}

	// Trusted side: attest, fetch the KEK, decrypt, verify, unpack.
	c, _ := client.New(hs.URL, client.WithAttester(evidence.Sample{}))
	rootfs := filepath.Join(dir, "rootfs")
	err = pull.Pull(ctx, enc, rootfs, pull.WithKeys(aa.NewUnwrapper(c.KeyResolver())))
	secret, _ := os.ReadFile(filepath.Join(rootfs, "secret"))
	fmt.Printf("%v %q attestations=%d\n", err, secret, c.Attestations())
	// Output:
	// <nil> "the model weights are 42\n" attestations=1
}
