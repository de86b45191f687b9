package imagecrypt_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"strings"
	"testing"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// threeKeys returns RSA, EC P-256 and EC P-384 key pairs (PKCS#8 / PKIX PEM).
func threeKeys(t *testing.T) (privs, pubs [][]byte) {
	t.Helper()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	e256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, k := range []any{rk, e256, e384} {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		privs = append(privs, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	for _, k := range []any{&rk.PublicKey, &e256.PublicKey, &e384.PublicKey} {
		der, _ := x509.MarshalPKIXPublicKey(k)
		pubs = append(pubs, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	return privs, pubs
}

// One coffer JWE for RSA, P-256 and P-384 recipients: general JSON with three
// recipients, and ocicrypt opens every layer with each key alone.
func TestInteropJWEThreeRecipientsCofferToOcicrypt(t *testing.T) {
	ctx := context.Background()
	privs, pubs := threeKeys(t)
	var specs []string
	for _, p := range writeKeys(t, "pub", pubs) {
		specs = append(specs, "jwe:"+p)
	}
	wrappers, err := recipients.ParseRecipients(ctx, specs, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	var orig [][]byte
	for i := range 2 {
		l, _ := random.Layer(int64(2048+i*100000), types.OCILayer)
		orig = append(orig, blob(t, l))
		img, _ = mutate.AppendLayers(img, l)
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, wrappers)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	for i, d := range m.Layers {
		entries := strings.Split(d.Annotations["org.opencontainers.image.enc.keys.jwe"], ",")
		if len(entries) != 1 {
			t.Fatalf("layer %d: got %d jwe entries, want 1", i, len(entries))
		}
		raw, err := base64.StdEncoding.DecodeString(entries[0])
		if err != nil {
			t.Fatal(err)
		}
		var gen struct {
			Recipients []json.RawMessage `json:"recipients"`
		}
		if err := json.Unmarshal(raw, &gen); err != nil || len(gen.Recipients) != 3 {
			t.Fatalf("layer %d: got %d recipients (%v), want 3", i, len(gen.Recipients), err)
		}
		l, _ := res.Image.LayerByDigest(d.Digest)
		ct := blob(t, l)
		for ki, priv := range privs {
			cc, err := occonfig.DecryptWithPrivKeys([][]byte{priv}, [][]byte{nil})
			if err != nil {
				t.Fatal(err)
			}
			r, dg, err := ocicrypt.DecryptLayer(cc.DecryptConfig, bytes.NewReader(ct), toOCI(d), false)
			if err != nil {
				t.Fatalf("layer %d key %d: ocicrypt: %v", i, ki, err)
			}
			if want := digest.FromBytes(orig[i]); dg != "" && dg != want { // ocicrypt (blockcipher init) drops privopts.digest and returns ""
				t.Errorf("ocicrypt digest: got %q, want %s", dg, want)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("layer %d key %d: ocicrypt read: %v", i, ki, err)
			}
			if !bytes.Equal(got, orig[i]) {
				t.Errorf("layer %d key %d: got %s, want %s", i, ki, digest.FromBytes(got), digest.FromBytes(orig[i]))
			}
		}
	}
}

// ocicrypt writes one JWE for RSA, P-256 and P-384; coffer opens it with each key.
func TestInteropJWEThreeRecipientsOcicryptToCoffer(t *testing.T) {
	ctx := context.Background()
	privs, pubs := threeKeys(t)
	cc, err := occonfig.EncryptWithJwe(pubs)
	if err != nil {
		t.Fatal(err)
	}
	img, _, plain := ocicryptImage(t, cc.EncryptConfig, 4096)
	want := digest.FromBytes(plain)
	for ki, f := range writeKeys(t, "priv", privs) {
		keys, err := recipients.ParseKeys(ctx, []string{f}, recipients.Env{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := imagecrypt.Decrypt(ctx, imagecrypt.Artifact{Image: img}, imagecrypt.WithKeys(keys...))
		if err != nil {
			t.Fatalf("key %d: %v", ki, err)
		}
		m, _ := res.Image.Manifest()
		d := m.Layers[0]
		l, _ := res.Image.LayerByDigest(d.Digest)
		if got := blob(t, l); d.Digest.String() != want.String() || !bytes.Equal(got, plain) {
			t.Errorf("key %d: got %s (%s), want %s", ki, d.Digest, digest.FromBytes(got), want)
		}
		res.Close()
	}
}
