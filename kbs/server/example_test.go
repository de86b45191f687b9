package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/spec"
)

// A broker is an http.Handler: here over a memory store, with one admin
// key and the sample TEE accepted (development only). The owner stores a
// key and a policy; a guest attests (RCAR) and receives it.
func Example() {
	ctx := context.Background()
	adminPub, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := server.New(ctx,
		server.WithStore(store.NewMemory()),
		server.WithAdminKeys(adminPub),
		server.WithVerifiers(attest.New(attest.Config{AllowSample: true})),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	owner, err := adminclient.New(hs.URL, adminKey)
	if err != nil {
		panic(err)
	}
	// The sample TEE is affirming under these reference values; the
	// resource policy releases to affirming guests.
	for name, v := range map[string]string{"launch_digest": "abcde", "svn": "1"} {
		if err := owner.SetReferenceValue(ctx, name, []string{v}); err != nil {
			panic(err)
		}
	}
	if err := owner.SetResourcePolicy(ctx, []byte(policy.ResourceAllowAll)); err != nil {
		panic(err)
	}
	if err := owner.SetResource(ctx, "default/image_key/app", []byte("0123456789abcdef0123456789abcdef")); err != nil {
		panic(err)
	}

	guest, err := client.New(hs.URL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		panic(err)
	}
	key, err := guest.GetResource(ctx, "default", "image_key", "app")
	fmt.Printf("guest got %q, %v\n", key, err)
	_, err = guest.GetResource(ctx, "default", "image_key", "other")
	fmt.Println("missing resource:", errors.Is(err, spec.ErrNotFound))
	// Output:
	// guest got "0123456789abcdef0123456789abcdef", <nil>
	// missing resource: true
}
