package imagecrypt_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"testing"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap/recipients"
)

// keyPair returns PEM private and public keys for RSA and EC recipients.
func keyPairs(t *testing.T) (privs, pubs [][]byte) {
	t.Helper()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, k := range []any{rk, ek} {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		privs = append(privs, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	for _, k := range []any{&rk.PublicKey, &ek.PublicKey} {
		der, _ := x509.MarshalPKIXPublicKey(k)
		pubs = append(pubs, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	return privs, pubs
}

func writeKeys(t *testing.T, prefix string, keys [][]byte) []string {
	t.Helper()
	var out []string
	for i, k := range keys {
		p := t.TempDir() + "/" + prefix + string(rune('a'+i)) + ".pem"
		if err := writeFile(p, k); err != nil {
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

// coffer encrypts layers (one JWE for an RSA and an EC recipient);
// ocicrypt's DecryptLayer, with each private key, recovers every blob and
// yields the original blob.
func TestOcicryptDecryptsCofferLayers(t *testing.T) {
	ctx := context.Background()
	privs, pubs := keyPairs(t)
	pubFiles := writeKeys(t, "pub", pubs)
	var specs []string
	for _, p := range pubFiles {
		specs = append(specs, "jwe:"+p)
	}
	wrappers, err := recipients.ParseRecipients(ctx, specs, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	var orig [][]byte
	for i := range 3 {
		l, _ := random.Layer(int64(1000+i*70000), types.OCILayer)
		orig = append(orig, blob(t, l))
		img, _ = mutate.AppendLayers(img, l)
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, wrappers)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	for ki, priv := range privs {
		cc, err := occonfig.DecryptWithPrivKeys([][]byte{priv}, [][]byte{nil})
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range m.Layers {
			l, _ := res.Image.LayerByDigest(d.Digest)
			// ocicrypt returns an empty digest here (it drops the privopts
			// digest and never checks it); the plaintext comparison is the check.
			r, _, err := ocicrypt.DecryptLayer(cc.DecryptConfig, bytes.NewReader(blob(t, l)), toOCI(d), false)
			if err != nil {
				t.Fatalf("key %d layer %d: ocicrypt: %v", ki, i, err)
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("key %d layer %d: ocicrypt read: %v", ki, i, err)
			}
			if !bytes.Equal(plain, orig[i]) {
				t.Errorf("key %d layer %d: plaintext differs", ki, i)
			}
		}
	}
}

// ocicrypt encrypts a layer; coffer decrypts the image built from it.
func TestCofferDecryptsOcicryptLayers(t *testing.T) {
	ctx := context.Background()
	privs, pubs := keyPairs(t)
	cc, err := occonfig.EncryptWithJwe(pubs)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, 300000)
	rand.Read(plain)
	desc := ocispec.Descriptor{MediaType: string(types.OCILayer), Digest: digest.FromBytes(plain), Size: int64(len(plain)),
		Annotations: map[string]string{"keep": "me"}}
	r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(plain), desc)
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
	ann["keep"] = "me"
	encLayer := static.NewLayer(ct, types.OCILayer+"+encrypted")
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: encLayer, Annotations: ann, MediaType: types.OCILayer + "+encrypted"})
	if err != nil {
		t.Fatal(err)
	}
	for i, privFile := range writeKeys(t, "priv", privs) {
		keys, err := recipients.ParseKeys(ctx, []string{privFile}, recipients.Env{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := imagecrypt.Decrypt(ctx, imagecrypt.Artifact{Image: img}, imagecrypt.WithKeys(keys...))
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		m, _ := res.Image.Manifest()
		d := m.Layers[0]
		l, _ := res.Image.LayerByDigest(d.Digest)
		if got := blob(t, l); !bytes.Equal(got, plain) || d.Digest.String() != desc.Digest.String() || d.MediaType != types.OCILayer || d.Annotations["keep"] != "me" {
			t.Errorf("key %d: decrypted layer %s %s %v", i, d.MediaType, d.Digest, d.Annotations)
		}
		res.Close()
	}
}
