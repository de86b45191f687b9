package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
)

func TestEncryptInspectDecrypt(t *testing.T) {
	k := newKeys(t)
	src := writeLayout(t, ociImage(t, 3), "v1")
	want := layoutDigest(t, src)
	out := t.TempDir()
	enc := ref(filepath.Join(out, "enc"), "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.rsaPub, "--recipient", "jwe:"+k.ecPub,
		"--recipient", "pkcs7:"+k.rsaCert, "--layer", "-1", "--layer", "0", src, enc)

	js := mustCoffer(t, "inspect", "--json", enc)
	var rep imagecrypt.Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, js)
	}
	ls := rep.Manifests[0].Layers
	if len(ls) != 3 || !ls[0].Encrypted || ls[1].Encrypted || !ls[2].Encrypted {
		t.Fatalf("inspect layers = %+v", ls)
	}
	if got := len(ls[0].Schemes); got != 2 || ls[0].Schemes[0].Scheme != "jwe" || ls[0].Schemes[1].Scheme != "pkcs7" {
		t.Errorf("layer 0 schemes = %+v", ls[0].Schemes)
	}
	if r := ls[0].Schemes[0].Recipients; len(r) != 2 || !strings.Contains(strings.Join(r, " "), "RSA-OAEP") || !strings.Contains(strings.Join(r, " "), "ECDH-ES+A256KW") {
		t.Errorf("jwe recipients = %q", r)
	}
	if r := ls[0].Schemes[1].Recipients; len(r) != 1 || !strings.Contains(r[0], "CN=coffer test") || !strings.Contains(r[0], "serial=") {
		t.Errorf("pkcs7 recipients = %q (want issuer and serial)", r)
	}
	text := mustCoffer(t, "inspect", enc)
	if !strings.Contains(text, "jwe(1) pkcs7(1)") {
		t.Errorf("inspect text:\n%s", text)
	}

	for name, key := range map[string][]string{
		"rsa jwe": {"--key", k.rsaPriv},
		"ec jwe":  {"--key", k.ecPriv},
		"pkcs7":   {"--key", k.rsaCert, "--key", k.rsaPriv},
	} {
		dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
		mustCoffer(t, append(append([]string{"decrypt"}, key...), enc, dec)...)
		if got := layoutDigest(t, dec); got != want {
			t.Errorf("%s: decrypted digest %s, want the original %s", name, got, want)
		}
	}
}

func TestAddRecipientsAndRekeyCLI(t *testing.T) {
	a, b := newKeys(t), newKeys(t)
	src := writeLayout(t, ociImage(t, 2), "v1")
	want := layoutDigest(t, src)
	dir := t.TempDir()
	enc := ref(filepath.Join(dir, "img"), "enc")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+a.rsaPub, src, enc)
	added := ref(filepath.Join(dir, "img"), "added")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+b.ecPub, "--key", a.rsaPriv, enc, added)
	rot := ref(filepath.Join(dir, "img"), "rotated")
	mustCoffer(t, "rekey", "--key", b.ecPriv, "--recipient", "jwe:"+b.rsaPub, added, rot)

	layers := func(r string) []v1.Descriptor {
		d, tag, _ := strings.Cut(strings.TrimPrefix(r, "oci:"), ":")
		p, _ := layout.FromPath(d)
		img, err := p.Image(layoutDigest(t, "oci:"+d+":"+tag))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		return m.Layers
	}
	e, ad, ro := layers(enc), layers(added), layers(rot)
	for i := range e {
		if e[i].Digest != ad[i].Digest || e[i].Digest != ro[i].Digest || e[i].Size != ro[i].Size {
			t.Errorf("layer %d blob changed by add/rekey", i)
		}
	}
	for _, tc := range []struct {
		tag string
		key string
		ok  bool
	}{
		{"added", a.rsaPriv, true}, {"added", b.ecPriv, true},
		{"rotated", a.rsaPriv, false}, {"rotated", b.ecPriv, false}, {"rotated", b.rsaPriv, true},
	} {
		dst := ref(filepath.Join(t.TempDir(), "d"), "v1")
		_, _, err := coffer(t, "decrypt", "--key", tc.key, ref(filepath.Join(dir, "img"), tc.tag), dst)
		if tc.ok && (err != nil || layoutDigest(t, dst) != want) {
			t.Errorf("%s with %s: %v", tc.tag, filepath.Base(tc.key), err)
		}
		if !tc.ok && !errors.Is(err, spec.ErrNoKey) {
			t.Errorf("%s with %s: err = %v, want ErrNoKey", tc.tag, filepath.Base(tc.key), err)
		}
	}
}

// Bad input: a clear error, the right sentinel, and nothing at DST.
func TestDecryptBadInputLeavesNothing(t *testing.T) {
	k, other := newKeys(t), newKeys(t)
	src := writeLayout(t, ociImage(t, 2), "v1")
	encDir := filepath.Join(t.TempDir(), "enc")
	enc := ref(encDir, "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.rsaPub, "--recipient", "pkcs7:"+k.rsaCert, src, enc)

	// A tampered copy: flip one byte of the largest encrypted blob.
	tampDir := filepath.Join(t.TempDir(), "tampered")
	if err := os.CopyFS(tampDir, os.DirFS(encDir)); err != nil {
		t.Fatal(err)
	}
	blob := largestLayerBlob(t, enc, tampDir)
	b, _ := os.ReadFile(blob)
	b[len(b)/2] ^= 1
	os.Chmod(blob, 0o644)
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pk7Dir := filepath.Join(t.TempDir(), "pk7")
	mustCoffer(t, "encrypt", "--recipient", "pkcs7:"+k.rsaCert, src, ref(pk7Dir, "v1"))
	truncDir := filepath.Join(t.TempDir(), "trunc")
	os.CopyFS(truncDir, os.DirFS(encDir))
	tb := largestLayerBlob(t, enc, truncDir)
	os.Chmod(tb, 0o644)
	os.Truncate(tb, int64(len(b)-10))

	for _, tc := range []struct {
		name string
		args []string
		want error
		msg  string
	}{
		{"wrong key", []string{"--key", other.rsaPriv, enc}, spec.ErrNoKey, "none of the given keys opens this layer (its recipients use jwe, pkcs7)"},
		{"tampered", []string{"--key", k.rsaPriv, ref(tampDir, "v1")}, spec.ErrIntegrity, "HMAC mismatch"},
		{"truncated", []string{"--key", k.rsaPriv, ref(truncDir, "v1")}, spec.ErrIntegrity, "layer"},
		{"wrong key and cert", []string{"--key", other.rsaPriv, "--key", other.rsaCert, enc}, spec.ErrNoKey, "none of the given keys"},
		{"pkcs7 only, no cert", []string{"--key", k.rsaPriv, ref(pk7Dir, "v1")}, spec.ErrNoKey, "needs the recipient certificate"},
	} {
		dstDir := filepath.Join(t.TempDir(), "dst")
		_, _, err := coffer(t, append([]string{"decrypt"}, append(tc.args, ref(dstDir, "v1"))...)...)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want %v containing %q", tc.name, err, tc.want, tc.msg)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", tc.name, err)
		}
		if blobs, _ := filepath.Glob(filepath.Join(dstDir, "blobs", "sha256", "*")); len(blobs) != 0 {
			t.Errorf("%s: %d blobs written to DST", tc.name, len(blobs))
		}
		if _, err := os.Stat(filepath.Join(dstDir, "index.json")); err == nil {
			t.Errorf("%s: DST index.json written", tc.name)
		}
	}
	if _, _, err := coffer(t, "encrypt", "--recipient", "rot13:x", src, ref(t.TempDir(), "x")); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("unknown scheme: err = %v", err)
	}
}

// largestLayerBlob returns the path, inside dir (a copy of the layout at
// r), of r's largest layer blob.
func largestLayerBlob(t *testing.T, r, dir string) string {
	t.Helper()
	var best v1.Hash
	var size int64 = -1
	ds := layerDigests(t, r)
	for _, d := range ds[:len(ds)-1] {
		if st, err := os.Stat(filepath.Join(dir, "blobs", "sha256", d.Hex)); err == nil && st.Size() > size {
			best, size = d, st.Size()
		}
	}
	return filepath.Join(dir, "blobs", "sha256", best.Hex)
}

func TestRegistryRoundTrip(t *testing.T) {
	k := newKeys(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	src := writeLayout(t, ociImage(t, 2), "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.ecPub, src, "docker://"+host+"/app:enc")
	out := mustCoffer(t, "inspect", "docker://"+host+"/app:enc")
	if !strings.Contains(out, "+encrypted") {
		t.Errorf("inspect of pushed image:\n%s", out)
	}
	dst := ref(filepath.Join(t.TempDir(), "d"), "v1")
	mustCoffer(t, "decrypt", "--key", k.ecPriv, "docker://"+host+"/app:enc", dst)
	if layoutDigest(t, dst) != layoutDigest(t, src) {
		t.Error("registry round trip changed the image")
	}
}

// skopeo (ocicrypt) decrypts what coffer encrypted, and the reverse.
func TestSkopeoInterop(t *testing.T) {
	testutil.RequireTool(t, "skopeo")
	k := newKeys(t)
	img := ociImage(t, 2)
	src := writeLayout(t, img, "v1")
	origLayers := layerDigests(t, src)
	for _, tc := range []struct {
		name       string
		recipient  string
		decryptKey []string
	}{
		{"jwe rsa", "jwe:" + k.rsaPub, []string{k.rsaPriv}},
		{"jwe ec", "jwe:" + k.ecPub, []string{k.ecPriv}},
		{"pkcs7", "pkcs7:" + k.rsaCert, []string{k.rsaPriv, k.rsaCert}},
	} {
		t.Run(tc.name+"/coffer to skopeo", func(t *testing.T) {
			enc := ref(filepath.Join(t.TempDir(), "enc"), "v1")
			mustCoffer(t, "encrypt", "--recipient", tc.recipient, src, enc)
			dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
			args := []string{"copy", "-q"}
			for _, key := range tc.decryptKey {
				args = append(args, "--decryption-key", key)
			}
			run(t, "skopeo", append(args, enc, dec)...)
			if got := layerDigests(t, dec); !equalHashes(got, origLayers) {
				t.Errorf("skopeo-decrypted layers %v, want %v", got, origLayers)
			}
		})
		t.Run(tc.name+"/skopeo to coffer", func(t *testing.T) {
			enc := ref(filepath.Join(t.TempDir(), "enc"), "v1")
			run(t, "skopeo", "copy", "-q", "--encryption-key", tc.recipient, src, enc)
			dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
			args := []string{"decrypt"}
			for _, key := range tc.decryptKey {
				args = append(args, "--key", key)
			}
			mustCoffer(t, append(args, enc, dec)...)
			if got := layerDigests(t, dec); !equalHashes(got, origLayers) {
				t.Errorf("coffer-decrypted layers %v, want %v", got, origLayers)
			}
			// skopeo accepts coffer's output as a plain image again.
			run(t, "skopeo", "copy", "-q", dec, ref(filepath.Join(t.TempDir(), "again"), "v1"))
		})
	}
}

func layerDigests(t *testing.T, r string) []v1.Hash {
	t.Helper()
	d, _, _ := strings.Cut(strings.TrimPrefix(r, "oci:"), ":")
	p, err := layout.FromPath(d)
	if err != nil {
		t.Fatal(err)
	}
	img, err := p.Image(layoutDigest(t, r))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return append(out, m.Config.Digest)
}

func equalHashes(a, b []v1.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
