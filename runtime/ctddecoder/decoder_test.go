package ctddecoder

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/imgcrypt/v2"
	"github.com/containerd/typeurl/v2"
	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	jose "github.com/go-jose/go-jose/v4"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/spec"
)

type keyPair struct {
	dir           string // holds only the private key
	priv, pubFile string
	privPEM, pub  []byte
}

func newKeyPair(t testing.TB) keyPair {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	kp := keyPair{dir: t.TempDir()}
	kp.privPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	kp.pub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	kp.priv = filepath.Join(kp.dir, "node.pem")
	if err := os.WriteFile(kp.priv, kp.privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	kp.pubPath(t)
	return kp
}

func (kp *keyPair) pubPath(t testing.TB) string {
	if kp.pubFile == "" {
		kp.pubFile = filepath.Join(t.TempDir(), "pub.pem")
		os.WriteFile(kp.pubFile, kp.pub, 0o644)
	}
	return kp.pubFile
}

// encLayer is one encrypted layer as an image holds it.
type encLayer struct {
	plain, blob []byte // plaintext blob (gzip) and ciphertext
	desc        v1.Descriptor
	diffID      v1.Hash
	manifest    []byte
	config      []byte
}

// cofferLayer encrypts a one-layer gzip image for kp with coffer.
func cofferLayer(t *testing.T, kp keyPair, content string) encLayer {
	t.Helper()
	return encryptFor(t, "jwe:"+kp.pubPath(t), content)
}

// encryptFor encrypts a one-layer gzip image for a recipient
// (jwe:FILE, pkcs7:CERT, pgp:PUBKEY) with coffer.
func encryptFor(t *testing.T, recipient, content string) encLayer {
	t.Helper()
	ctx := context.Background()
	l := testutil.TarLayer(t, map[string][]byte{"secret.txt": []byte(content)}, "gzip")
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	if err != nil {
		t.Fatal(err)
	}
	w, err := recipients.ParseRecipients(ctx, []string{recipient}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, w, imagecrypt.WithTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return layerOf(t, res.Artifact.Image, l)
}

func layerOf(t testing.TB, img v1.Image, plainLayer v1.Layer) encLayer {
	t.Helper()
	var e encLayer
	m, _ := img.Manifest()
	e.desc = m.Layers[0]
	e.manifest, _ = img.RawManifest()
	e.config, _ = img.RawConfigFile()
	ls, _ := img.Layers()
	rc, _ := ls[0].Compressed()
	e.blob, _ = io.ReadAll(rc)
	rc.Close()
	rc, _ = plainLayer.Compressed()
	e.plain, _ = io.ReadAll(rc)
	rc.Close()
	e.diffID, _ = plainLayer.DiffID()
	return e
}

// containerdRoot writes a content store holding the image's manifest and
// config (what `ctr images import` leaves behind).
func containerdRoot(t testing.TB, e encLayer) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "io.containerd.content.v1.content", "blobs", "sha256")
	os.MkdirAll(dir, 0o700)
	for _, b := range [][]byte{e.manifest, e.config, e.blob} {
		h, _, _ := v1.SHA256(bytes.NewReader(b))
		os.WriteFile(filepath.Join(dir, h.Hex), b, 0o644)
	}
	return root
}

// imgcryptPayload is the fd-3 bytes containerd sends when its client used
// imgcrypt's WithDecryptedUnpack (ctr-enc, CRI's node key model): imgcrypt's
// own Payload type marshalled by typeurl as WithDecryptedUnpack does (that
// function's package needs containerd v2, which the module proxy does not
// serve here), then serialized as containerd's binary processor does.
func imgcryptPayload(t *testing.T, dc occonfig.DecryptConfig, desc v1.Descriptor) []byte {
	t.Helper()
	od := ocispec.Descriptor{MediaType: string(desc.MediaType), Digest: godigest.Digest(desc.Digest.String()), Size: desc.Size, Annotations: desc.Annotations}
	a, err := typeurl.MarshalAny(&imgcrypt.Payload{DecryptConfig: dc, Descriptor: od})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorder fails the test's invariant if anything at all is written.
type recorder struct{ bytes.Buffer }

func TestDecode(t *testing.T) {
	t.Parallel()
	kp, other := newKeyPair(t), newKeyPair(t)
	e := cofferLayer(t, kp, "only in the encrypted layer\n")
	root := containerdRoot(t, e)
	emptyRoot := t.TempDir()
	ccKey, _ := occonfig.DecryptWithPrivKeys([][]byte{kp.privPEM}, [][]byte{nil})
	ccOther, _ := occonfig.DecryptWithPrivKeys([][]byte{other.privPEM}, [][]byte{nil})
	tampered := bytes.Clone(e.blob)
	tampered[len(tampered)/2] ^= 1
	otherLayer := cofferLayer(t, kp, "another layer\n")
	// A content store whose copy of the blob is corrupt (stdin is right).
	badStore := containerdRoot(t, e)
	os.WriteFile(filepath.Join(badStore, "io.containerd.content.v1.content", "blobs", "sha256", e.desc.Digest.Hex), tampered, 0o644)

	mt := string(e.desc.MediaType)
	for _, tc := range []struct {
		name    string
		in      []byte
		opts    []Option
		wantErr error
		source  string
		spooled bool
	}{
		{"imgcrypt payload with keys", e.blob, []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc))}, nil, "payload", true},
		{"imgcrypt payload, node keys", e.blob, []Option{WithPayload(imgcryptPayload(t, occonfig.DecryptConfig{}, e.desc)), WithKeysPath(kp.dir)}, nil, "payload", true},
		{"payload, the stored blob serves as spool", e.blob, []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc)), WithContainerdRoot(root)}, nil, "payload", false},
		{"payload, stored blob corrupt, stdin right", e.blob, []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc)), WithContainerdRoot(badStore)}, nil, "payload", true},
		{"payload, stdin tampered, stored blob right", tampered, []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc)), WithContainerdRoot(root)}, spec.ErrNotFound, "", false},
		{"no payload, node keys, content store", e.blob, []Option{WithKeysPath(kp.dir), WithContainerdRoot(root)}, nil, "content store", true},
		{"no payload, layer not in the content store", e.blob, []Option{WithKeysPath(kp.dir), WithContainerdRoot(emptyRoot)}, spec.ErrNotFound, "", false},
		{"no key source at all", e.blob, []Option{WithContainerdRoot(root)}, spec.ErrNoKey, "", false},
		{"wrong node key", e.blob, []Option{WithKeysPath(other.dir), WithContainerdRoot(root)}, spec.ErrNoKey, "", false},
		{"wrong payload key", e.blob, []Option{WithPayload(imgcryptPayload(t, *ccOther.DecryptConfig, e.desc))}, spec.ErrNoKey, "", false},
		{"tampered, payload", tampered, []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc))}, spec.ErrIntegrity, "", false},
		{"tampered, content store", tampered, []Option{WithKeysPath(kp.dir), WithContainerdRoot(containerdRoot(t, encLayer{manifest: e.manifest, config: e.config, blob: tampered}))}, spec.ErrNotFound, "", false},
		{"truncated", e.blob[:len(e.blob)-1], []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc))}, spec.ErrIntegrity, "", false},
		{"payload names another layer", otherLayer.blob, []Option{WithPayload(imgcryptPayload(t, *ccKey.DecryptConfig, e.desc))}, spec.ErrIntegrity, "", false},
		{"garbage payload", e.blob, []Option{WithPayload([]byte("\xff\xff\xff")), WithKeysPath(kp.dir)}, spec.ErrUnsupported, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out recorder
			res, err := Decode(context.Background(), &out, bytes.NewReader(tc.in), append([]Option{WithMediaType(mt), WithTempDir(t.TempDir())}, tc.opts...)...)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if out.Len() != 0 {
					t.Fatalf("%d bytes emitted before the failure", out.Len())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), e.plain) {
				t.Fatalf("output differs from the plaintext blob (%d vs %d bytes)", out.Len(), len(e.plain))
			}
			if res.Descriptor != tc.source || res.Match != imagecrypt.MatchBlob || res.Size != int64(len(e.plain)) || res.Spooled != tc.spooled {
				t.Errorf("result %+v, want descriptor from %s, blob match, spooled %v", res, tc.source, tc.spooled)
			}
		})
	}
}

// The spool goes: nothing is left in the temp dir, whatever the outcome.
func TestDecodeLeavesNoSpool(t *testing.T) {
	t.Parallel()
	kp := newKeyPair(t)
	e := cofferLayer(t, kp, "x")
	tmp := t.TempDir()
	bad := bytes.Clone(e.blob)
	bad[0] ^= 1
	for _, in := range [][]byte{e.blob, bad} {
		Decode(context.Background(), io.Discard, bytes.NewReader(in), WithMediaType(string(e.desc.MediaType)),
			WithTempDir(tmp), WithKeysPath(kp.dir), WithContainerdRoot(containerdRoot(t, e)))
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Errorf("spool dir holds %s", ents[0].Name())
		}
	}
}

// Layers encrypted by ocicrypt as its real callers call it: imgcrypt and
// skopeo wrap the blob digest; containers/image, compressing while it
// encrypts, wraps the uncompressed one. Both decode through the content
// store path and the payload path.
func TestDecodeOcicryptWriters(t *testing.T) {
	t.Parallel()
	kp := newKeyPair(t)
	l := testutil.TarLayer(t, map[string][]byte{"f": bytes.Repeat([]byte("data"), 5000)}, "gzip")
	rc, _ := l.Compressed()
	plain, _ := io.ReadAll(rc)
	rc.Close()
	blobDigest, _ := l.Digest()
	diffID, _ := l.DiffID()
	ec, _ := occonfig.EncryptWithJwe([][]byte{kp.pub})
	for _, tc := range []struct {
		name    string
		wrapped v1.Hash
		want    imagecrypt.DigestMatch
	}{
		{"imgcrypt/skopeo (blob digest)", blobDigest, imagecrypt.MatchBlob},
		{"containers/image compressing (uncompressed digest)", diffID, imagecrypt.MatchUncompressed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			desc := ocispec.Descriptor{MediaType: spec.MediaTypeLayerGzip, Digest: godigest.Digest(tc.wrapped.String()), Size: int64(len(plain))}
			r, fin, err := ocicrypt.EncryptLayer(ec.EncryptConfig, bytes.NewReader(plain), desc)
			if err != nil {
				t.Fatal(err)
			}
			blob, _ := io.ReadAll(r)
			ann, err := fin()
			if err != nil {
				t.Fatal(err)
			}
			h, _, _ := v1.SHA256(bytes.NewReader(blob))
			ed := v1.Descriptor{MediaType: spec.MediaTypeLayerGzip + "+encrypted", Digest: h, Size: int64(len(blob)), Annotations: ann}
			var out bytes.Buffer
			res, err := Decode(context.Background(), &out, bytes.NewReader(blob), WithMediaType(string(ed.MediaType)), WithTempDir(t.TempDir()),
				WithPayload(imgcryptPayload(t, occonfig.DecryptConfig{}, ed)), WithKeysPath(kp.dir))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), plain) || res.Match != tc.want {
				t.Errorf("match %v (want %v), output equal = %v", res.Match, tc.want, bytes.Equal(out.Bytes(), plain))
			}
		})
	}
}

// fd 3 is a payload only when it is readable and a pipe (or a regular file
// outside /proc and /sys): otherwise it is someone else's descriptor (the
// Go runtime's cgroup file, GNU time's output) and there is no payload.
func TestWithPayloadFile(t *testing.T) {
	t.Parallel()
	want := []byte("payload bytes")
	pr, pw, _ := os.Pipe()
	go func() { pw.Write(want); pw.Close() }()
	defer pr.Close()
	reg := filepath.Join(t.TempDir(), "p")
	os.WriteFile(reg, want, 0o600)
	rf, _ := os.Open(reg)
	defer rf.Close()
	wo, _ := os.OpenFile(filepath.Join(t.TempDir(), "w"), os.O_CREATE|os.O_WRONLY, 0o600)
	defer wo.Close()
	sys, err := os.Open("/proc/self/stat")
	if err != nil {
		t.Skip(err)
	}
	defer sys.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
		want []byte
	}{
		{"pipe", pr, want},
		{"regular file", rf, want},
		{"write-only file", wo, nil},
		{"/proc file", sys, nil},
		{"none", nil, nil},
	} {
		var o options
		if err := WithPayloadFile(tc.f)(&o); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(o.payload, tc.want) {
			t.Errorf("%s: payload %q, want %q", tc.name, o.payload, tc.want)
		}
	}
}

// A node key directory holds keys in every supported format; each opens the
// layers encrypted for it; files that are no usable key are skipped.
func TestDecodeKeyDirFormats(t *testing.T) {
	t.Parallel()
	keys, pubs := t.TempDir(), t.TempDir()
	rk := keystest.RSA(t, 0)
	keystest.Write(t, keys, "a-rsa-pkcs1.pem", keystest.PEM("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)))
	_, certDER := keystest.Cert(t, rk, "node")
	keystest.Write(t, keys, "a-rsa.crt", keystest.PEM("CERTIFICATE", certDER))
	ek := keystest.EC(t, elliptic.P384())
	sec1, _ := x509.MarshalECPrivateKey(ek)
	keystest.Write(t, keys, "b-ec-sec1.pem", keystest.PEM("EC PRIVATE KEY", sec1))
	jk := keystest.EC(t, elliptic.P256())
	jwk, _ := jose.JSONWebKey{Key: jk}.MarshalJSON()
	keystest.Write(t, keys, "c-ec.jwk", jwk)
	pg := keystest.PGP(t, "node")
	keystest.Write(t, keys, "d-node.asc", keystest.PGPSecret(t, pg, true, nil))
	keystest.Write(t, keys, "README", []byte("not a key"))
	keystest.Write(t, keys, "e-ed25519.pem", keystest.PKCS8(t, ed25519.NewKeyFromSeed(make([]byte, 32))))
	recips := map[string]string{
		"jwe rsa":   "jwe:" + keystest.Write(t, pubs, "rsa.pub", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, &rk.PublicKey))),
		"pkcs7":     "pkcs7:" + keystest.Write(t, pubs, "rsa.crt", keystest.PEM("CERTIFICATE", certDER)),
		"jwe ec384": "jwe:" + keystest.Write(t, pubs, "ec.pub", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, &ek.PublicKey))),
		"jwe jwk":   "jwe:" + keystest.Write(t, pubs, "jwk.pub", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, &jk.PublicKey))),
		"pgp":       "pgp:" + keystest.Write(t, pubs, "pgp.pub", keystest.PGPPublic(t, pg, true)),
	}
	for name, r := range recips {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := encryptFor(t, r, name)
			var out bytes.Buffer
			_, err := Decode(context.Background(), &out, bytes.NewReader(e.blob), WithMediaType(string(e.desc.MediaType)),
				WithTempDir(t.TempDir()), WithKeysPath(keys), WithContainerdRoot(containerdRoot(t, e)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), e.plain) {
				t.Error("output is not the plaintext layer")
			}
		})
	}
}
