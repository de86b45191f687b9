package wpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wpm"
)

// The owner encrypts a disk image with a fresh key held by its broker and
// writes the signed flavor a workload service will verify.
func Example() {
	ctx := context.Background()
	adminPub, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	broker, _ := server.New(ctx, server.WithAdminKeys(adminPub), server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	hs := httptest.NewServer(broker)
	defer hs.Close()
	admin, _ := adminclient.New(hs.URL, adminKey)
	signer, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)

	dir, _ := os.MkdirTemp("", "wpm-example")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "disk.qcow2"), []byte("a tiny disk image"), 0o600)
	f, err := wpm.CreateImageFlavor(ctx, wpm.ImageFlavorRequest{
		Label: "cirros", Input: filepath.Join(dir, "disk.qcow2"), Output: filepath.Join(dir, "disk.enc"),
		FlavorOut: filepath.Join(dir, "flavor.json"), BrokerURL: hs.URL, Admin: admin, SigningKey: signer,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, id, _ := flavor.ParseKeyURL(f.Encryption.KeyURL)
	key, _ := broker.Store().Get(ctx, mustPath(flavor.KeyResource(id)))
	fmt.Println(f.Meta.Description.FlavorPart, f.EncryptionRequired, strings.HasPrefix(f.Encryption.KeyURL, hs.URL+"/kbs/v1/keys/"))
	fmt.Println(len(key), flavor.ValidID(f.Meta.ID))
	// Output:
	// IMAGE true true
	// 32 true
}

func mustPath(s string) protocol.ResourcePath {
	p, err := protocol.ParseResourcePath(s)
	if err != nil {
		panic(err)
	}
	return p
}
