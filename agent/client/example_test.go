package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/spec"
)

// The RCAR client on its own: attest once (auth, challenge, evidence,
// token), then fetch resources with the cached token. A policy denial comes
// back as spec.ErrPolicyDenied. The sample TEE stands in for hardware; a
// real broker refuses it unless started with --allow-sample-tee.
func Example() {
	ctx := context.Background()
	adminPub, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := server.New(ctx, server.WithAdminKeys(adminPub), server.WithLogger(slog.New(slog.DiscardHandler)),
		server.WithVerifiers(attest.New(attest.Config{AllowSample: true})))
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	admin, _ := adminclient.New(hs.URL, adminKey)
	_ = admin.SetResource(ctx, "default/app/password", []byte("hunter2"))
	_ = admin.SetResourcePolicy(ctx, []byte(policy.ResourceAllowAll))

	c, _ := client.New(hs.URL, client.WithAttester(evidence.Sample{}))
	secret, err := c.GetResource(ctx, "default", "app", "password")
	fmt.Printf("%q %v\n", secret, err)
	_, err = c.GetResource(ctx, "default", "app", "password")
	fmt.Println("attestations:", c.Attestations(), err)

	_ = admin.SetResourcePolicy(ctx, []byte(policy.ResourceDenyAll))
	_, err = c.GetResource(ctx, "default", "app", "password")
	fmt.Println("denied:", errors.Is(err, spec.ErrPolicyDenied))
	// Output:
	// "hunter2" <nil>
	// attestations: 1 <nil>
	// denied: true
}
