package imagecrypt_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap/aa"
)

// A layer encrypted and wrapped by hand in the reference (ocicrypt +
// guest-components AnnotationPacket) shapes decrypts in coffer with
// aa.NewUnwrapper resolving the KEK.
func TestInteropAAHandBuiltAnnotation(t *testing.T) {
	ctx := context.Background()
	const kid = "kbs:///default/image_key/interop"
	kek := make([]byte, 32)
	symkey := make([]byte, 32)
	nonce := make([]byte, 16)
	iv := make([]byte, 12)
	plain := make([]byte, 5000)
	for _, b := range [][]byte{kek, symkey, nonce, iv, plain} {
		rand.Read(b)
	}
	// AES-256-CTR over the blob, HMAC-SHA256 (same key) over the ciphertext.
	blk, _ := aes.NewCipher(symkey)
	ct := make([]byte, len(plain))
	cipher.NewCTR(blk, nonce).XORKeyStream(ct, plain)
	mac := hmac.New(sha256.New, symkey)
	mac.Write(ct)
	pub, _ := json.Marshal(map[string]any{"cipher": "AES_256_CTR_HMAC_SHA256", "hmac": mac.Sum(nil), "cipheroptions": map[string]any{}})
	priv, _ := json.Marshal(map[string]any{"symkey": symkey, "digest": digest.FromBytes(plain).String(),
		"cipheroptions": map[string]any{"nonce": nonce}})
	kblk, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(kblk)
	packet := fmt.Sprintf(`{"kid":%q,"wrapped_data":%q,"iv":%q,"wrap_type":"A256GCM"}`, kid,
		base64.StdEncoding.EncodeToString(gcm.Seal(nil, iv, priv, nil)), base64.StdEncoding.EncodeToString(iv))
	ann := map[string]string{
		"org.opencontainers.image.enc.pubopts":                         base64.StdEncoding.EncodeToString(pub),
		"org.opencontainers.image.enc.keys.provider.attestation-agent": base64.StdEncoding.EncodeToString([]byte(packet)),
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(ct, types.OCILayer+"+encrypted"), Annotations: ann, MediaType: types.OCILayer + "+encrypted"})
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	u := aa.NewUnwrapper(func(_ context.Context, k string) ([]byte, error) {
		asked = append(asked, k)
		return kek, nil
	})
	res, err := imagecrypt.Decrypt(ctx, imagecrypt.Artifact{Image: img}, imagecrypt.WithKeys(u))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	d := m.Layers[0]
	l, _ := res.Image.LayerByDigest(d.Digest)
	got := blob(t, l)
	if want := digest.FromBytes(plain).String(); d.Digest.String() != want || !bytes.Equal(got, plain) {
		t.Errorf("got %s (%s), want %s", d.Digest, digest.FromBytes(got), want)
	}
	if len(asked) != 1 || asked[0] != kid {
		t.Errorf("resolver asked %v, want [%s]", asked, kid)
	}
}
