package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
)

// Override copies exactly the named keys: how flags override a config file.
func TestConfigOverride(t *testing.T) {
	file := DefaultConfig()
	file.Listen, file.RateLimit, file.SessionTTL = "0.0.0.0:9", 7, time.Minute
	flags := DefaultConfig()
	flags.Listen, flags.RateLimit, flags.AllowSampleTee = "127.0.0.1:1", 0, true
	if err := file.Override(flags, "rate_limit", "allow_sample_tee"); err != nil {
		t.Fatal(err)
	}
	if file.Listen != "0.0.0.0:9" || file.RateLimit != 0 || !file.AllowSampleTee || file.SessionTTL != time.Minute {
		t.Fatalf("after Override: %+v", file)
	}
	if err := file.Override(flags, "no_such_key"); err == nil {
		t.Fatal("unknown key accepted")
	}
}

func TestParseAdminACL(t *testing.T) {
	t.Parallel()
	got, err := ParseAdminACL([]string{"tenant-a=tenant-a/*/*,shared/k/*", "tenant-b=tenant-b/*/*", "tenant-a=x/y/z"})
	want := map[string][]string{"tenant-a": {"tenant-a/*/*", "shared/k/*", "x/y/z"}, "tenant-b": {"tenant-b/*/*"}}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"tenant-a", "=a/b/c", "tenant-a="} {
		if _, err := ParseAdminACL([]string{bad}); err == nil {
			t.Errorf("ParseAdminACL(%q) accepted", bad)
		}
	}
}

// The store is opened by its URL's scheme through store.Open: fs (with the
// repository directory, or fs:///DIR), memory, or whatever is registered;
// an unknown scheme names the ones there are.
func TestConfigOpensStoreByScheme(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ url, wantType string }{
		{"memory", "*store.Memory"},
		{"fs", "*store.FS " + dir + "/repo"},
		{"fs://" + dir + "/other", "*store.FS " + dir + "/other"},
	} {
		c := DefaultConfig()
		c.Store, c.Repository = tc.url, dir+"/repo"
		opts, closer, err := c.Options(t.Context(), Files{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		s, err := New(t.Context(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%T", s.Store())
		if fs, ok := s.Store().(interface{ Dir() string }); ok {
			got += " " + fs.Dir()
		}
		if got != tc.wantType {
			t.Errorf("%s: store %s, want %s", tc.url, got, tc.wantType)
		}
		s.Close()
		closer()
	}
	c := DefaultConfig()
	c.Store = "nosuch://x"
	if _, _, err := c.Options(t.Context(), Files{}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "fs, memory") {
		t.Errorf("unknown scheme: %v, want an error naming the registered ones", err)
	}
}

// Options reads no file: the contents come in Files (the names only label
// errors), and a file named without its contents is refused.
func TestOptionsTakeFileContents(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	c := DefaultConfig()
	c.Store = "memory"
	c.AdminPublicKeys = []string{"/nonexistent/admin.pub"}
	c.ResourcePolicyFile = "/nonexistent/policy.rego"
	f := Files{AdminPublicKeys: [][]byte{pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}, ResourcePolicy: []byte(policy.ResourceAllowAll)}
	opts, closer, err := c.Options(t.Context(), f, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closer()
	s, err := New(t.Context(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Policy().ResourcePolicy() != policy.ResourceAllowAll {
		t.Fatalf("resource policy %q, want the one given in Files", s.Policy().ResourcePolicy())
	}
	f.ResourcePolicy = nil
	if _, _, err := c.Options(t.Context(), f, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "resource_policy_file is named but its contents were not given") {
		t.Fatalf("policy named without contents: %v", err)
	}
}
