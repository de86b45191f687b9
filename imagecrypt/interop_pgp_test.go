package imagecrypt_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
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

// ocicrypt's pgp wrapper itself uses an in-process OpenPGP library with key
// rings passed in the config (the gpg binary is only used by its callers to
// export keys), so these tests drive ocicrypt's pgp path directly, no gpg needed.

const pgpEmail = "interop@coffer.test"

// pgpKeys returns a binary public key ring and an unencrypted binary secret key
// ring, and armored copies for coffer's key files.
func pgpKeys(t *testing.T) (pubRing, secRing, pubASC, secASC []byte) {
	t.Helper()
	e, err := openpgp.NewEntity("interop", "", pgpEmail, &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	var pb, sb bytes.Buffer
	if err := e.Serialize(&pb); err != nil {
		t.Fatal(err)
	}
	if err := e.SerializePrivate(&sb, nil); err != nil {
		t.Fatal(err)
	}
	arm := func(typ string, b []byte) []byte {
		var o bytes.Buffer
		w, _ := armor.Encode(&o, typ, nil)
		w.Write(b)
		w.Close()
		return o.Bytes()
	}
	return pb.Bytes(), sb.Bytes(), arm(openpgp.PublicKeyType, pb.Bytes()), arm(openpgp.PrivateKeyType, sb.Bytes())
}

func TestInteropPGPCofferToOcicrypt(t *testing.T) {
	ctx := context.Background()
	_, sec, pubASC, _ := pgpKeys(t)
	files := writeKeys(t, "pgp", [][]byte{pubASC})
	wrappers, err := recipients.ParseRecipients(ctx, []string{"pgp:" + files[0]}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := random.Layer(8192, types.OCILayer)
	orig := blob(t, l)
	img, _ := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, wrappers)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	cc, err := occonfig.DecryptWithGpgPrivKeys([][]byte{sec}, [][]byte{{}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := res.Image.Manifest()
	d := m.Layers[0]
	el, _ := res.Image.LayerByDigest(d.Digest)
	r, dg, err := ocicrypt.DecryptLayer(cc.DecryptConfig, bytes.NewReader(blob(t, el)), toOCI(d), false)
	if err != nil {
		t.Fatalf("ocicrypt: %v", err)
	}
	if want := digest.FromBytes(orig); dg != "" && dg != want { // ocicrypt (blockcipher init) drops privopts.digest and returns ""
		t.Errorf("ocicrypt digest: got %q, want %s", dg, want)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ocicrypt read: %v", err)
	}
	if !bytes.Equal(got, orig) {
		t.Errorf("got %s, want %s", digest.FromBytes(got), digest.FromBytes(orig))
	}
}

func TestInteropPGPOcicryptToCoffer(t *testing.T) {
	ctx := context.Background()
	pub, _, _, secASC := pgpKeys(t)
	cc, err := occonfig.EncryptWithGpg([][]byte{[]byte(pgpEmail)}, pub)
	if err != nil {
		t.Fatal(err)
	}
	img, ann, plain := ocicryptImage(t, cc.EncryptConfig, 6000)
	want := digest.FromBytes(plain)
	if ann["org.opencontainers.image.enc.keys.pgp"] == "" {
		t.Fatalf("ocicrypt wrote no pgp entry: %v", ann)
	}
	keys, err := recipients.ParseKeys(ctx, writeKeys(t, "sec", [][]byte{secASC}), recipients.Env{})
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
	if got := blob(t, l); d.Digest.String() != want.String() || !bytes.Equal(got, plain) {
		t.Errorf("got %s (%s), want %s", d.Digest, digest.FromBytes(got), want)
	}
}
