package ctddecoder

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// BenchmarkDecode: the decoder alone on a 64 MiB uncompressed layer, from
// memory to io.Discard, with the descriptor from the content store (no
// payload, plain ctr) and from a payload.
func BenchmarkDecode(b *testing.B) {
	ctx := context.Background()
	kp := newKeyPair(b)
	raw := make([]byte, 64<<20)
	rand.Read(raw)
	l := static.NewLayer(raw, types.OCIUncompressedLayer)
	img, _ := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	w, _ := recipients.ParseRecipients(ctx, []string{"jwe:" + kp.pubPath(b)}, recipients.Env{})
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, w, imagecrypt.WithTempDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer res.Close()
	e := layerOf(b, res.Artifact.Image, l)
	root := containerdRoot(b, e)
	tmp := b.TempDir()
	for _, mode := range []string{"content store", "payload"} {
		b.Run(mode, func(b *testing.B) {
			opts := []Option{WithMediaType(string(e.desc.MediaType)), WithKeysPath(kp.dir), WithContainerdRoot(root), WithTempDir(tmp)}
			if mode == "payload" {
				opts = append(opts, WithPayload(marshalPayload(b, Payload{Descriptor: &e.desc})))
			}
			b.SetBytes(int64(len(e.blob)))
			for b.Loop() {
				if _, err := Decode(ctx, io.Discard, bytes.NewReader(e.blob), opts...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
