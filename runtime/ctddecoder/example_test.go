package ctddecoder_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/runtime/ctddecoder"
)

// What containerd does with `ctr images import` of an encrypted image and
// coffer's decoder as stream processor: the image is in its content store,
// the layer arrives on stdin with no payload, the node key is in a
// directory.
func ExampleDecode() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "ctd-example-")
	defer os.RemoveAll(dir)

	// The node key, and an image with one layer encrypted for it.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keys := filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o700)
	os.WriteFile(filepath.Join(keys, "node.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	w, _ := jwe.NewWrapper([]jwe.Recipient{{Key: &key.PublicKey}})
	layer, _ := random.Layer(4096, types.OCILayer)
	img, _ := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, []keywrap.Wrapper{w}, imagecrypt.WithTempDir(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Close()
	enc := res.Artifact.Image

	// containerd's content store after the import: manifest, config, blobs.
	root := filepath.Join(dir, "containerd")
	blobs := filepath.Join(root, "io.containerd.content.v1.content", "blobs", "sha256")
	os.MkdirAll(blobs, 0o700)
	m, _ := enc.RawManifest()
	c, _ := enc.RawConfigFile()
	for _, b := range [][]byte{m, c} {
		h, _, _ := v1.SHA256(bytes.NewReader(b))
		os.WriteFile(filepath.Join(blobs, h.Hex), b, 0o644)
	}
	ls, _ := enc.Layers()
	mt, _ := ls[0].MediaType()
	rc, _ := ls[0].Compressed()
	ciphertext, _ := io.ReadAll(rc)

	var out bytes.Buffer
	r, err := ctddecoder.Decode(ctx, &out, bytes.NewReader(ciphertext),
		ctddecoder.WithMediaType(string(mt)), // STREAM_PROCESSOR_MEDIATYPE
		ctddecoder.WithKeysPath(keys),
		ctddecoder.WithContainerdRoot(root),
		ctddecoder.WithTempDir(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	prc, _ := layer.Compressed()
	plain, _ := io.ReadAll(prc)
	fmt.Println("media type:", mt)
	fmt.Println("descriptor from:", r.Descriptor)
	fmt.Println("digest check:", r.Match)
	fmt.Println("output is the plaintext layer:", bytes.Equal(out.Bytes(), plain))
	// Output:
	// media type: application/vnd.oci.image.layer.v1.tar+gzip+encrypted
	// descriptor from: content store
	// digest check: blob digest
	// output is the plaintext layer: true
}
