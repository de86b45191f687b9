package adminclient_test

import (
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
