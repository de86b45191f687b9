package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// A Docker schema 2 source (docker-archive) is converted to OCI on encrypt,
// so the result decrypts — with coffer and with skopeo — to the same layers.
func TestDockerArchiveSourceConverted(t *testing.T) {
	k := newKeys(t)
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arch := filepath.Join(dir, "app.tar")
	tag, _ := name.NewTag("coffer/app:v1")
	if err := tarball.WriteToFile(arch, tag, img); err != nil {
		t.Fatal(err)
	}
	enc := ref(filepath.Join(dir, "enc"), "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.ecPub, "docker-archive:"+arch, enc)
	dec := ref(filepath.Join(dir, "dec"), "v1")
	mustCoffer(t, "decrypt", "--key", k.ecPriv, enc, dec)
	m, _ := img.Manifest()
	got := layerDigests(t, dec)
	for i, l := range m.Layers {
		if got[i] != l.Digest {
			t.Errorf("layer %d digest %s, want %s", i, got[i], l.Digest)
		}
	}
	// Round trip through the other archive forms.
	mustCoffer(t, "decrypt", "--key", k.ecPriv, enc, "docker-archive:"+filepath.Join(dir, "out.tar"))
	enc2 := "oci-archive:" + filepath.Join(dir, "enc2.tar")
	if _, _, err := coffer(t, "encrypt", "--recipient", "jwe:"+k.rsaPub, enc, enc2); err == nil || !strings.Contains(err.Error(), "pass --key") {
		t.Errorf("adding recipients without --key: err = %v", err)
	}
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.rsaPub, "--key", k.ecPriv, enc, enc2)
	mustCoffer(t, "decrypt", "--key", k.rsaPriv, enc2, "oci-archive:"+filepath.Join(dir, "dec2.tar"))
}

func TestDockerArchiveWithSkopeo(t *testing.T) {
	testutil.RequireTool(t, "skopeo")
	k := newKeys(t)
	img, _ := random.Image(2048, 1)
	dir := t.TempDir()
	arch := filepath.Join(dir, "app.tar")
	tag, _ := name.NewTag("coffer/app:v1")
	if err := tarball.WriteToFile(arch, tag, img); err != nil {
		t.Fatal(err)
	}
	enc := ref(filepath.Join(dir, "enc"), "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.rsaPub, "docker-archive:"+arch, enc)
	run(t, "skopeo", "copy", "-q", "--decryption-key", k.rsaPriv, enc, ref(filepath.Join(dir, "dec"), "v1"))
}
