package adminclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/spec"
)

// The admin client on its own: every call is signed with a short-lived
// Ed25519 admin token. RegisterKEK generates a key that exists only in memory
// and in the broker; a second registration at the same id is refused
// (images encrypted under the first still need it) unless replace is set.
// A token signed by a key the broker does not hold is refused as
// AdminAuthAccess, which maps to spec.ErrPolicyDenied like every denial.
func Example() {
	ctx := context.Background()
	adminPub, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := server.New(ctx, server.WithAdminKeys(adminPub), server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	admin, _ := adminclient.New(hs.URL, adminKey)
	kek, kid, err := admin.RegisterKEK(ctx, "default/image_key/app", false)
	fmt.Println(len(kek), kid, err)
	_, _, err = admin.RegisterKEK(ctx, "default/image_key/app", false)
	fmt.Println("again:", errors.Is(err, spec.ErrExists))

	_ = admin.SetResourcePolicy(ctx, []byte("package policy\ndefault allow := false\n"))
	p, err := admin.GetResourcePolicy(ctx)
	fmt.Printf("%q %v\n", p, err)

	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := adminclient.New(hs.URL, stranger)
	err = other.SetResource(ctx, "default/app/password", []byte("x"))
	fmt.Println("stranger:", errors.Is(err, spec.ErrPolicyDenied))
	// Output:
	// 32 kbs:///default/image_key/app <nil>
	// again: true
	// "package policy\ndefault allow := false\n" <nil>
	// stranger: true
}
