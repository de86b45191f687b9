package imagecrypt

import (
	"context"
	"math/rand/v2"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const benchLayerSize = 256 << 20

// benchImage is a one-layer image of 256 MiB of random bytes.
func benchImage(b *testing.B) v1.Image {
	buf := make([]byte, benchLayerSize)
	rand.NewChaCha8([32]byte{1}).Read(buf)
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), static.NewLayer(buf, types.OCILayer))
	if err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkStageEncrypt and BenchmarkStageDecrypt measure a layer's trip
// through layercrypt into a staged file in b.TempDir() (on disk unless
// TMPDIR is a tmpfs).
func BenchmarkStageEncrypt(b *testing.B) {
	img := benchImage(b)
	k := newTestKey(nil, "jwe")
	dir := b.TempDir()
	b.SetBytes(benchLayerSize)
	for b.Loop() {
		res, err := Encrypt(context.Background(), Artifact{Image: img}, []keyWrapper{k}, WithTempDir(dir))
		if err != nil {
			b.Fatal(err)
		}
		res.Close()
	}
}

func BenchmarkStageDecrypt(b *testing.B) {
	img := benchImage(b)
	k := newTestKey(nil, "jwe")
	dir := b.TempDir()
	enc, err := Encrypt(context.Background(), Artifact{Image: img}, []keyWrapper{k}, WithTempDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	b.SetBytes(benchLayerSize)
	for b.Loop() {
		res, err := Decrypt(context.Background(), Artifact{Image: enc.Image}, WithKeys(k), WithTempDir(dir))
		if err != nil {
			b.Fatal(err)
		}
		res.Close()
	}
}
