package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/kbstest"
)

// writeKeyPair writes a P-256 key as PKCS#8 and PKIX PEM under dir/name.
func writeKeyPair(t *testing.T, dir, name string) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pd, _ := x509.MarshalPKCS8PrivateKey(k)
	ud, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pd}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ud}), 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// tamperTopLayer flips one byte of the top layer's blob in an OCI layout.
func tamperTopLayer(t *testing.T, dir string) {
	t.Helper()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	read := func(d string, v any) {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", strings.Replace(d, ":", "/", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(b, &idx) != nil || len(idx.Manifests) == 0 {
		t.Fatalf("index.json: %v", err)
	}
	var m struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	read(idx.Manifests[0].Digest, &m)
	p := filepath.Join(dir, "blobs", strings.Replace(m.Layers[len(m.Layers)-1].Digest, ":", "/", 1))
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)/2] ^= 1
	if err := os.WriteFile(p, blob, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Every row of the exit-code table (README "Exit codes", `coffer --help`)
// is what a real failure of that kind returns.
func TestExitCodesEveryRow(t *testing.T) {
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	src := "oci:" + filepath.Join(dir, "app") + ":v1"
	alice, alicePub := writeKeyPair(t, dir, "alice")
	bob, _ := writeKeyPair(t, dir, "bob")
	enc := "oci:" + filepath.Join(dir, "enc") + ":v1"
	if out, err := runCoffer(t, "", "encrypt", "--recipient", "jwe:"+alicePub, src, enc); err != nil {
		t.Fatalf("encrypt: %v\n%s", err, out)
	}
	tampered := filepath.Join(dir, "tampered")
	if out, err := runCoffer(t, "", "encrypt", "--recipient", "jwe:"+alicePub, src, "oci:"+tampered+":v1"); err != nil {
		t.Fatalf("encrypt: %v\n%s", err, out)
	}
	tamperTopLayer(t, tampered)

	b := kbstest.New(t)
	kbsArgs := []string{"encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app", src, "oci:" + filepath.Join(dir, "kbs") + ":v1"}
	if out, err := runCoffer(t, "", kbsArgs...); err != nil {
		t.Fatalf("encrypt --kbs: %v\n%s", err, out)
	}
	// A registry that refuses every credential.
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	locked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "owner" || p != "right" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(locked.Close)
	lockedRef := "docker://" + strings.TrimPrefix(locked.URL, "http://") + "/app:v1"

	for _, tc := range []struct {
		code int
		args []string
	}{
		{0, []string{"version"}},
		{0, []string{"--version"}},
		{0, []string{"inspect", enc}},
		{1, []string{"kbs", "get-resource-policy", "--url", "http://" + testutil.FreeAddr(t), "--admin-key", b.AdminKeyFile}},
		{2, []string{"decrypt", "--key", alice, enc}},                   // wrong argument count
		{2, []string{"decrypt", "--no-such-flag", enc, enc}},            // unknown flag
		{2, []string{"no-such-verb"}},                                   // unknown command
		{2, []string{"kbs", "no-such-verb"}},                            // unknown command in a group
		{2, []string{"decrypt", enc, "oci:" + filepath.Join(dir, "x")}}, // a required flag missing
		{2, []string{"inspect", "no-transport"}},                        // malformed reference
		{3, []string{"decrypt", "--key", bob, enc, "oci:" + filepath.Join(dir, "dec3") + ":v1"}},
		{4, []string{"decrypt", "--key", alice, "oci:" + tampered + ":v1", "oci:" + filepath.Join(dir, "dec4") + ":v1"}},
		{5, []string{"pull", "--require-signature", "--key", alice, enc, filepath.Join(dir, "rootfs5")}},
		{6, []string{"inspect", "oci:" + filepath.Join(dir, "missing") + ":v1"}},
		{6, []string{"decrypt", "--key", filepath.Join(dir, "no-such-key.pem"), enc, "oci:" + filepath.Join(dir, "dec6") + ":v1"}},
		{6, []string{"kbs", "list-resources", "--url", b.URL, "--admin-key", filepath.Join(dir, "no-such-admin.key")}},
		{7, []string{"inspect", "ftp:" + filepath.Join(dir, "app")}}, // unknown transport
		{7, []string{"encrypt", "--recipient", "nosuchscheme:x", src, enc}},
		{8, kbsArgs},
		{9, []string{"encrypt", "--creds", "owner:wrong", "--recipient", "jwe:" + alicePub, src, lockedRef}},
	} {
		out, err := runCoffer(t, "", tc.args...)
		if got := ExitCode(err); got != tc.code {
			t.Errorf("coffer %s: exit %d (%v), want %d\n%s", strings.Join(tc.args, " "), got, err, tc.code, out)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("coffer %s: error is not one line: %q", strings.Join(tc.args, " "), err)
		}
	}
	// The table in --help lists every code.
	out, _ := runCoffer(t, "", "--help")
	for c := 0; c <= 9; c++ {
		if !strings.Contains(out, "\n  "+string(rune('0'+c))+"  ") {
			t.Errorf("coffer --help does not list exit code %d:\n%s", c, out)
		}
	}
}
