package adminclient_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/spec"
)

func TestAdminClient(t *testing.T) {
	ctx := context.Background()
	b := kbstest.New(t)
	key, err := adminclient.LoadKey(b.AdminKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := adminclient.New(b.URL, key)
	if err != nil {
		t.Fatal(err)
	}
	p := protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "nginx"}
	if err := c.SetResource(ctx, "default/image_key/nginx", []byte("k1")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetResource(ctx, "kbs:///default/image_key/nginx", []byte("k2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Store.Get(ctx, p); string(got) != "k2" {
		t.Fatalf("stored: got %q", got)
	}
	if err := c.SetResourcePolicy(ctx, []byte(policy.ResourceAllowAll)); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetResourcePolicy(ctx); err != nil || string(got) != policy.ResourceAllowAll {
		t.Fatalf("GetResourcePolicy: %q %v", got, err)
	}
	err = c.SetResourcePolicy(ctx, []byte("package policy\nallow if {"))
	var ae *adminclient.Error
	if !errors.As(err, &ae) || !errors.Is(err, spec.ErrUnsupported) || ae.Info.Variant() != protocol.ErrPolicyEngine {
		t.Fatalf("bad policy: got %v", err)
	}
	if err := c.SetAttestationPolicy(ctx, "", []byte(policy.DefaultAttestation)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReferenceValue(ctx, "svn", []string{"1", "2"}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(b.Server.Policy().ReferenceValues()["svn"]); got != "[1 2]" {
		t.Fatalf("reference values: got %s", got)
	}
	if err := c.DeleteResource(ctx, "default/image_key/nginx"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteResource(ctx, "default/image_key/nginx"); !errors.Is(err, spec.ErrNotFound) {
		t.Fatalf("delete missing: got %v, want ErrNotFound", err)
	}
	if err := c.SetResource(ctx, "../x/y", nil); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("bad path: got %v", err)
	}
}

func TestAdminClientRejected(t *testing.T) {
	ctx := context.Background()
	b := kbstest.New(t, server.WithAdminRole("admin"))
	_, wrong, _ := ed25519.GenerateKey(rand.Reader)
	c, _ := adminclient.New(b.URL, wrong)
	err := c.SetResource(ctx, "default/a/b", []byte("x"))
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("wrong key: got %v, want ErrPolicyDenied", err)
	}
	c, _ = adminclient.New(b.URL, b.AdminKey)
	if err := c.SetResource(ctx, "default/a/b", []byte("x")); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("missing role: got %v", err)
	}
	c, _ = adminclient.New(b.URL, b.AdminKey, adminclient.WithRole("admin"), adminclient.WithTokenTTL(time.Minute))
	if err := c.SetResource(ctx, "default/a/b", []byte("x")); err != nil {
		t.Fatalf("with role: %v", err)
	}
	if _, err := adminclient.New("ftp://x", b.AdminKey); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("bad url: got %v", err)
	}
}

// RegisterKEK is create-only unless asked to replace: a second registration
// at the same id fails with spec.ErrExists and leaves the first key.
func TestRegisterKEK(t *testing.T) {
	b := kbstest.New(t)
	c, err := adminclient.New(b.URL, b.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kek, kid, err := c.RegisterKEK(ctx, "default/image_key/app", false)
	if err != nil || len(kek) != adminclient.KEKSize || kid != "kbs:///default/image_key/app" {
		t.Fatalf("RegisterKEK: %d bytes, %q, %v", len(kek), kid, err)
	}
	stored := func() []byte {
		v, err := b.Store.Get(ctx, protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "app"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if !bytes.Equal(stored(), kek) {
		t.Fatal("the broker holds another key than the one returned")
	}
	if _, _, err := c.RegisterKEK(ctx, "kbs:///default/image_key/app", false); !errors.Is(err, spec.ErrExists) {
		t.Fatalf("second registration: %v, want ErrExists", err)
	}
	if !bytes.Equal(stored(), kek) {
		t.Fatal("a refused registration replaced the key")
	}
	kek2, _, err := c.RegisterKEK(ctx, "default/image_key/app", true)
	if err != nil || bytes.Equal(kek2, kek) || !bytes.Equal(stored(), kek2) {
		t.Fatalf("replace: %v", err)
	}
	if _, _, err := c.RegisterKEK(ctx, "default/../x", false); err == nil {
		t.Fatal("invalid key id accepted")
	}
}
