package coffer_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/spec"
)

// The pin default: on for a registry destination when a broker is given,
// off for an OCI layout unless asked; WithPin(false) turns it off.
func TestEncryptPinDefault(t *testing.T) {
	ctx := context.Background()
	url, adminKey, stop := broker(ctx)
	defer stop()
	reg := httptest.NewServer(registry.New())
	defer reg.Close()
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	src := "oci:" + filepath.Join(dir, "app") + ":v1"
	host := strings.TrimPrefix(reg.URL, "http://")
	for i, tc := range []struct {
		dst  string
		pin  []coffer.Option
		want bool
	}{
		{"docker://" + host + "/app:enc", nil, true},
		{"docker://" + host + "/app:nopin", []coffer.Option{coffer.WithPin(false)}, false},
		{"oci:" + filepath.Join(dir, "enc") + ":v1", nil, false},
		{"oci:" + filepath.Join(dir, "enc2") + ":v1", []coffer.Option{coffer.WithPin(true)}, true},
	} {
		var pinned []imagepolicy.Pinned
		opts := append([]coffer.Option{coffer.WithKBS(url), coffer.WithAdminKey(adminKey), coffer.WithKeyID("default/image_key/k" + string(rune('a'+i))),
			coffer.WithPinned(func(p imagepolicy.Pinned) { pinned = append(pinned, p) }), quiet}, tc.pin...)
		if _, err := coffer.Encrypt(ctx, src, tc.dst, opts...); err != nil {
			t.Fatalf("%s: %v", tc.dst, err)
		}
		if got := len(pinned) == 1; got != tc.want {
			t.Errorf("%s: pinned %v, want %v", tc.dst, pinned, tc.want)
		}
	}
}

// Misuse is refused before anything is read, written or registered.
func TestEncryptRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_ = demo.WriteImage(filepath.Join(dir, "app"), "v1")
	src, dst := "oci:"+filepath.Join(dir, "app")+":v1", "oci:"+filepath.Join(dir, "enc")+":v1"
	for _, tc := range []struct {
		opts []coffer.Option
		want string
	}{
		{nil, "no recipients"},
		{[]coffer.Option{coffer.WithPin(true)}, "pinning needs a broker"},
		{[]coffer.Option{coffer.WithKeyID("default/image_key/a")}, "needs a broker"},
		{[]coffer.Option{coffer.WithKBS("http://127.0.0.1:1")}, "needs a key id"},
		{[]coffer.Option{coffer.WithKBS("http://127.0.0.1:1"), coffer.WithKeyID("default/image_key/a")}, "admin key"},
		{[]coffer.Option{coffer.WithKeyID("../x/y")}, "key id"},
	} {
		_, err := coffer.Encrypt(ctx, src, dst, append(tc.opts, quiet)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d options: %v, want an error containing %q", len(tc.opts), err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "enc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused Encrypt wrote %s: %v", dst, err)
	}
	// A KEK already at the id: a KEKError before anything is written.
	url, adminKey, stop := broker(ctx)
	defer stop()
	opts := []coffer.Option{coffer.WithKBS(url), coffer.WithAdminKey(adminKey), coffer.WithKeyID("default/image_key/a"), quiet}
	if _, err := coffer.Encrypt(ctx, src, dst, opts...); err != nil {
		t.Fatal(err)
	}
	_, err := coffer.Encrypt(ctx, src, "oci:"+filepath.Join(dir, "again")+":v1", opts...)
	var ke *coffer.KEKError
	if !errors.As(err, &ke) || ke.Committed || !errors.Is(err, spec.ErrExists) {
		t.Fatalf("second Encrypt at one key id: %v, want a KEKError wrapping ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "again")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Encrypt wrote its destination: %v", err)
	}
}
