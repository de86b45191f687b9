package imagecrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"testing"
	"time"

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

// pkcs7Pair returns a self-signed RSA certificate and its PKCS#8 key, both PEM.
func pkcs7Pair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "interop"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// coffer encrypts an image to a pkcs7 recipient; ocicrypt decrypts each layer.
func TestInteropPKCS7CofferToOcicrypt(t *testing.T) {
	ctx := context.Background()
	cert, key := pkcs7Pair(t)
	files := writeKeys(t, "p7", [][]byte{cert, key})
	wrappers, err := recipients.ParseRecipients(ctx, []string{"pkcs7:" + files[0]}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	var orig [][]byte
	for i := range 2 {
		l, _ := random.Layer(int64(4096+i*200000), types.OCILayer)
		orig = append(orig, blob(t, l))
		img, _ = mutate.AppendLayers(img, l)
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, wrappers)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	kc, err := occonfig.DecryptWithPrivKeys([][]byte{key}, [][]byte{nil})
	if err != nil {
		t.Fatal(err)
	}
	xc, err := occonfig.DecryptWithX509s([][]byte{cert})
	if err != nil {
		t.Fatal(err)
	}
	cc := occonfig.CombineCryptoConfigs([]occonfig.CryptoConfig{kc, xc})
	m, _ := res.Image.Manifest()
	for i, d := range m.Layers {
		if _, ok := d.Annotations["org.opencontainers.image.enc.keys.pkcs7"]; !ok {
			t.Fatalf("layer %d: no pkcs7 annotation: %v", i, d.Annotations)
		}
		l, _ := res.Image.LayerByDigest(d.Digest)
		r, dg, err := ocicrypt.DecryptLayer(cc.DecryptConfig, bytes.NewReader(blob(t, l)), toOCI(d), false)
		if err != nil {
			t.Fatalf("layer %d: ocicrypt: %v", i, err)
		}
		if want := digest.FromBytes(orig[i]); dg != "" && dg != want { // ocicrypt (blockcipher init) drops privopts.digest and returns ""
			t.Errorf("ocicrypt digest: got %q, want %s", dg, want)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("layer %d: ocicrypt read: %v", i, err)
		}
		if !bytes.Equal(got, orig[i]) {
			t.Errorf("layer %d: got %s, want %s", i, digest.FromBytes(got), digest.FromBytes(orig[i]))
		}
	}
}

// ocicrypt encrypts a layer to a pkcs7 recipient; coffer decrypts the image.
func TestInteropPKCS7OcicryptToCoffer(t *testing.T) {
	ctx := context.Background()
	cert, key := pkcs7Pair(t)
	files := writeKeys(t, "p7", [][]byte{cert, key})
	cc, err := occonfig.EncryptWithPkcs7([][]byte{cert})
	if err != nil {
		t.Fatal(err)
	}
	img, _, plain := ocicryptImage(t, cc.EncryptConfig, 70000)
	want := digest.FromBytes(plain)
	keys, err := recipients.ParseKeys(ctx, []string{files[1], files[0]}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := imagecrypt.Decrypt(ctx, imagecrypt.Artifact{Image: img}, imagecrypt.WithKeys(keys...))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	d := m.Layers[0]
	l, _ := res.Image.LayerByDigest(d.Digest)
	got := blob(t, l)
	if d.Digest.String() != want.String() || !bytes.Equal(got, plain) {
		t.Errorf("got %s (%s), want %s", d.Digest, digest.FromBytes(got), want)
	}
	if d.MediaType != types.OCILayer {
		t.Errorf("media type: got %s, want %s", d.MediaType, types.OCILayer)
	}
}
