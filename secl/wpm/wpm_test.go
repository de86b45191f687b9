package wpm_test

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wpm"
)

// The signing key and certificate openssl makes as docs/secl.md says
// load as a flavor signer and verifier.
func TestOpenSSLSigningKey(t *testing.T) {
	t.Parallel()
	bin := testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	key, crt := filepath.Join(dir, "flavor-signer.pem"), filepath.Join(dir, "signer.crt")
	out, err := exec.Command(bin, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
		"-subj", "/CN=flavor-signer", "-keyout", key, "-out", crt, "-days", "1").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	s, err := wpm.LoadSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := flavor.LoadSigners(crt)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := flavor.New(flavor.PartImage, "x", flavor.KeyURL("http://127.0.0.1:8080", "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	doc, err := flavor.Sign(f, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flavor.Verify(doc, certs); err != nil {
		t.Fatal(err)
	}
}

func TestParseKeyURL(t *testing.T) {
	t.Parallel()
	const id = "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"
	for _, tc := range []struct {
		url, base, id string
	}{
		{flavor.KeyURL("https://kbs.example:8443/", id), "https://kbs.example:8443", id},
		{"http://kbs/kbs/v1/keys/" + id + "/transfer", "http://kbs", id},
		{"http://kbs/kbs/v1/keys/../x/transfer", "", ""},
		{"http://kbs/kbs/v1/keys/" + id + "/transfer?x=1", "", ""},
		{"ftp://kbs/kbs/v1/keys/" + id + "/transfer", "", ""},
		{"http://user@kbs/kbs/v1/keys/" + id + "/transfer", "", ""},
	} {
		base, gotID, err := flavor.ParseKeyURL(tc.url)
		if base != tc.base || gotID != tc.id || (err == nil) != (tc.base != "") {
			t.Errorf("ParseKeyURL(%q) = %q, %q, %v; want %q, %q", tc.url, base, gotID, err, tc.base, tc.id)
		}
	}
}
