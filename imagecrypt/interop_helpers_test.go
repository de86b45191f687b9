package imagecrypt_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"testing"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func writeKeys(t *testing.T, prefix string, keys [][]byte) []string {
	t.Helper()
	var out []string
	for i, k := range keys {
		p := t.TempDir() + "/" + prefix + string(rune('a'+i)) + ".pem"
		if err := os.WriteFile(p, k, 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func toOCI(d v1.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size, Annotations: d.Annotations}
}

func blob(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ocicryptImage has ocicrypt encrypt a random layer of size bytes with ec
// and puts it in a one-layer OCI image. It returns the image, the layer's
// annotations as ocicrypt wrote them, and the plaintext.
func ocicryptImage(t *testing.T, ec *occonfig.EncryptConfig, size int) (v1.Image, map[string]string, []byte) {
	t.Helper()
	plain := make([]byte, size)
	rand.Read(plain)
	desc := ocispec.Descriptor{MediaType: string(types.OCILayer), Digest: digest.FromBytes(plain), Size: int64(size)}
	r, fin, err := ocicrypt.EncryptLayer(ec, bytes.NewReader(plain), desc)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	ann, err := fin()
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(ct, types.OCILayer+"+encrypted"), Annotations: ann, MediaType: types.OCILayer + "+encrypted"})
	if err != nil {
		t.Fatal(err)
	}
	return img, ann, plain
}
