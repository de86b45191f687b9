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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
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
	u := aa.NewUnwrapper(aa.KeyResolver(func(_ context.Context, k string) ([]byte, error) {
		asked = append(asked, k)
		return kek, nil
	}))
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

// coffer's aa annotation and blob, opened by hand: the privopts digest names
// the plaintext, the HMAC in pubopts matches, and AES-CTR recovers the blob.
func TestInteropAAHandOpensCofferLayer(t *testing.T) {
	kek := make([]byte, 32)
	rand.Read(kek)
	w, err := aa.NewWrapper(kek, "kbs:///default/image_key/interop")
	if err != nil {
		t.Fatal(err)
	}
	l, _ := random.Layer(3000, types.OCILayer)
	orig := blob(t, l)
	img, _ := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	res, err := imagecrypt.Encrypt(context.Background(), imagecrypt.Artifact{Image: img}, []keywrap.Wrapper{w})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	d := m.Layers[0]
	el, _ := res.Image.LayerByDigest(d.Digest)
	ct := blob(t, el)
	entry, _ := base64.StdEncoding.DecodeString(d.Annotations["org.opencontainers.image.enc.keys.provider.attestation-agent"])
	var pkt struct{ WrappedData, IV []byte }
	var raw map[string]string
	if err := json.Unmarshal(entry, &raw); err != nil {
		t.Fatal(err)
	}
	pkt.WrappedData, _ = base64.StdEncoding.DecodeString(raw["wrapped_data"])
	pkt.IV, _ = base64.StdEncoding.DecodeString(raw["iv"])
	if raw["wrap_type"] != "A256GCM" || len(pkt.IV) != 12 {
		t.Fatalf("packet: wrap_type %q iv %d bytes, want A256GCM, 12", raw["wrap_type"], len(pkt.IV))
	}
	kblk, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(kblk)
	privJSON, err := gcm.Open(nil, pkt.IV, pkt.WrappedData, nil)
	if err != nil {
		t.Fatal(err)
	}
	var priv struct {
		Symkey  []byte `json:"symkey"`
		Digest  string `json:"digest"`
		Options struct {
			Nonce []byte `json:"nonce"`
		} `json:"cipheroptions"`
	}
	if err := json.Unmarshal(privJSON, &priv); err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(orig).String(); priv.Digest != want {
		t.Errorf("privopts digest: got %s, want %s", priv.Digest, want)
	}
	pubJSON, _ := base64.StdEncoding.DecodeString(d.Annotations["org.opencontainers.image.enc.pubopts"])
	var pub struct {
		Cipher string `json:"cipher"`
		HMAC   []byte `json:"hmac"`
	}
	if err := json.Unmarshal(pubJSON, &pub); err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, priv.Symkey)
	mac.Write(ct)
	if pub.Cipher != "AES_256_CTR_HMAC_SHA256" || !hmac.Equal(mac.Sum(nil), pub.HMAC) {
		t.Errorf("pubopts: cipher %q, hmac match %v", pub.Cipher, hmac.Equal(mac.Sum(nil), pub.HMAC))
	}
	blk, err := aes.NewCipher(priv.Symkey)
	if err != nil || len(priv.Options.Nonce) != 16 {
		t.Fatalf("symkey/nonce: %v, nonce %d bytes", err, len(priv.Options.Nonce))
	}
	got := make([]byte, len(ct))
	cipher.NewCTR(blk, priv.Options.Nonce).XORKeyStream(got, ct)
	if !bytes.Equal(got, orig) {
		t.Errorf("got %s, want %s", digest.FromBytes(got), digest.FromBytes(orig))
	}
}
