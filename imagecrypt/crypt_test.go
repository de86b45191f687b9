package imagecrypt

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
)

// testKey is a minimal AES-GCM wrapper/unwrapper: enough to exercise
// imagecrypt without depending on the real schemes (tested in keywrap/...).
type testKey struct {
	scheme string
	kek    []byte
}

func newTestKey(t *testing.T, scheme string) *testKey {
	k := make([]byte, 32)
	rand.Read(k)
	return &testKey{scheme, k}
}

func (k *testKey) Scheme() string { return k.scheme }
func (k *testKey) aead() cipher.AEAD {
	b, _ := aes.NewCipher(k.kek)
	g, _ := cipher.NewGCM(b)
	return g
}
func (k *testKey) Wrap(_ context.Context, p []byte) ([]byte, error) {
	n := make([]byte, 12)
	rand.Read(n)
	return k.aead().Seal(n, n, p, nil), nil
}
func (k *testKey) Unwrap(_ context.Context, e []byte) ([]byte, error) {
	if len(e) < 12 {
		return nil, spec.ErrNoKey
	}
	p, err := k.aead().Open(nil, e[:12], e[12:], nil)
	if err != nil {
		return nil, fmt.Errorf("test key: %w", spec.ErrNoKey)
	}
	return p, nil
}

func ociImage(t *testing.T, n int) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i := range n {
		l, err := random.Layer(int64(1000*(i+1)), types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, Annotations: map[string]string{"keep.me": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func layerBytes(t *testing.T, img v1.Image) [][]byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	ctx := context.Background()
	img := ociImage(t, 3)
	k := newTestKey(t, "jwe")
	tmp := t.TempDir()
	enc, err := Encrypt(ctx, Artifact{Image: img}, []keyWrapper{k}, WithTempDir(tmp))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if enc.Layers != 3 {
		t.Errorf("changed layers = %d, want 3", enc.Layers)
	}
	m, err := enc.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := img.Manifest()
	for i, d := range m.Layers {
		if d.MediaType != types.OCILayer+"+encrypted" {
			t.Errorf("layer %d media type = %s", i, d.MediaType)
		}
		if d.Annotations["keep.me"] != fmt.Sprint(i) || d.Annotations[spec.AnnotationPubOpts] == "" || d.Annotations[spec.AnnotationKeyPrefix+"jwe"] == "" {
			t.Errorf("layer %d annotations = %v", i, d.Annotations)
		}
		if d.Size != orig.Layers[i].Size || d.Digest == orig.Layers[i].Digest {
			t.Errorf("layer %d: size %d digest %s; original %d %s", i, d.Size, d.Digest, orig.Layers[i].Size, orig.Layers[i].Digest)
		}
	}
	if m.Config.Digest != orig.Config.Digest {
		t.Errorf("config changed: %s != %s", m.Config.Digest, orig.Config.Digest)
	}
	// Materialize through a real registry so nothing depends on in-memory state.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:enc")
	if err := remote.Write(ref, enc.Image); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decrypt(ctx, Artifact{Image: pulled}, WithKeys(k), WithTempDir(tmp))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if got, want := digestOf(t, dec.Image), digestOf(t, img); got != want {
		t.Errorf("round trip digest = %s, want %s", got, want)
	}
	for i, b := range layerBytes(t, dec.Image) {
		if !bytes.Equal(b, layerBytes(t, img)[i]) {
			t.Errorf("layer %d bytes differ", i)
		}
	}
	enc.Close()
	dec.Close()
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("temp files left after Close: %d", len(left))
	}
}

type keyWrapper = keywrap.Wrapper

func TestLayerSelection(t *testing.T) {
	ctx := context.Background()
	img := ociImage(t, 3)
	k := newTestKey(t, "jwe")
	for _, tc := range []struct {
		sel     []int
		want    []bool
		wantErr string
	}{
		{[]int{-1}, []bool{false, false, true}, ""},
		{[]int{0, 2}, []bool{true, false, true}, ""},
		{[]int{-3}, []bool{true, false, false}, ""},
		{[]int{3}, nil, "layer index 3 is out of range: the image has 3 layers"},
		{[]int{-4}, nil, "out of range"},
	} {
		res, err := Encrypt(ctx, Artifact{Image: img}, []keyWrapper{k}, WithLayers(tc.sel...), WithTempDir(t.TempDir()))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err = %v, want %q", tc.sel, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		m, _ := res.Image.Manifest()
		orig, _ := img.Manifest()
		for i, want := range tc.want {
			got := spec.IsEncrypted(string(m.Layers[i].MediaType))
			if got != want {
				t.Errorf("%v: layer %d encrypted = %v, want %v", tc.sel, i, got, want)
			}
			if !want && m.Layers[i].Digest != orig.Layers[i].Digest {
				t.Errorf("%v: unselected layer %d changed", tc.sel, i)
			}
		}
		res.Close()
	}
}

func encryptOne(t *testing.T, img v1.Image, k *testKey) (*Result, v1.Image) {
	t.Helper()
	res, err := Encrypt(context.Background(), Artifact{Image: img}, []keyWrapper{k}, WithTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return res, res.Image
}

// replaceLayer swaps layer i's blob for data, keeping its descriptor.
type swapped struct {
	v1.Image
	target v1.Hash
	data   []byte
}

type bytesLayer struct {
	v1.Layer
	data []byte
}

func (b bytesLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

func (s swapped) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := s.Image.LayerByDigest(h)
	if err != nil || h != s.target {
		return l, err
	}
	return bytesLayer{l, s.data}, nil
}

func TestDecryptRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	img := ociImage(t, 2)
	k := newTestKey(t, "jwe")
	_, enc := encryptOne(t, img, k)
	m, _ := enc.Manifest()
	blobs := layerBytes(t, enc)
	tampered := bytes.Clone(blobs[1])
	tampered[10] ^= 0xff
	for name, tc := range map[string]struct {
		img  v1.Image
		keys []*testKey
		want error
		msg  string
	}{
		"tampered":          {swapped{enc, m.Layers[1].Digest, tampered}, []*testKey{k}, spec.ErrIntegrity, "layer 1"},
		"truncated":         {swapped{enc, m.Layers[1].Digest, blobs[1][:len(blobs[1])-3]}, []*testKey{k}, spec.ErrIntegrity, "blob ended after"},
		"wrong key":         {enc, []*testKey{newTestKey(t, "jwe")}, spec.ErrNoKey, "recipients use jwe"},
		"no key for scheme": {enc, []*testKey{newTestKey(t, "pgp")}, spec.ErrNoKey, "none of the given keys"},
	} {
		var opts []Option
		for _, k := range tc.keys {
			opts = append(opts, WithKeys(k))
		}
		tmp := t.TempDir()
		opts = append(opts, WithTempDir(tmp))
		_, err := Decrypt(ctx, Artifact{Image: tc.img}, opts...)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want %v containing %q", name, err, tc.want, tc.msg)
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("%s: %d staged files left after failure", name, len(left))
		}
	}
}

// A layer whose wrapped options name another digest must not decrypt, even
// though its HMAC verifies: coffer checks what the references do not.
func TestDecryptChecksPrivoptsDigest(t *testing.T) {
	ctx := context.Background()
	k := newTestKey(t, "jwe")
	_, enc := encryptOne(t, ociImage(t, 1), k)
	m, _ := enc.Manifest()
	d := m.Layers[0]
	entries, _ := spec.KeyAnnotations(d.Annotations)
	raw, err := k.Unwrap(ctx, entries["jwe"][0])
	if err != nil {
		t.Fatal(err)
	}
	p, _ := spec.UnmarshalPrivate(raw)
	p.Digest = "sha256:" + strings.Repeat("0", 64)
	e, _ := k.Wrap(ctx, spec.MarshalPrivate(p))
	d.Annotations[spec.AnnotationKeyPrefix+"jwe"] = spec.AppendKeyEntry("", e)
	forged, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer: swappedLayer{bytesLayer{nil, layerBytes(t, enc)[0]}, d}, Annotations: d.Annotations, MediaType: d.MediaType,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Decrypt(ctx, Artifact{Image: forged}, WithKeys(k), WithTempDir(t.TempDir()))
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "does not match the digest in its wrapped options") {
		t.Fatalf("err = %v", err)
	}
}

type swappedLayer struct {
	bytesLayer
	d v1.Descriptor
}

func (s swappedLayer) Digest() (v1.Hash, error)            { return s.d.Digest, nil }
func (s swappedLayer) DiffID() (v1.Hash, error)            { return s.d.Digest, nil }
func (s swappedLayer) Size() (int64, error)                { return s.d.Size, nil }
func (s swappedLayer) MediaType() (types.MediaType, error) { return s.d.MediaType, nil }
func (s swappedLayer) Uncompressed() (io.ReadCloser, error) {
	return s.Compressed()
}

func TestAddRecipientsAndRekey(t *testing.T) {
	ctx := context.Background()
	img := ociImage(t, 2)
	a, b, c := newTestKey(t, "jwe"), newTestKey(t, "pgp"), newTestKey(t, "jwe")
	_, enc := encryptOne(t, img, a)
	// Adding without a key is refused with advice.
	if _, err := Encrypt(ctx, Artifact{Image: enc}, []keyWrapper{b}); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Fatalf("add without key: err = %v", err)
	}
	added, err := Encrypt(ctx, Artifact{Image: enc}, []keyWrapper{b}, WithKeys(a))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := enc.Manifest()
	after, _ := added.Image.Manifest()
	for i := range before.Layers {
		if before.Layers[i].Digest != after.Layers[i].Digest || before.Layers[i].Size != after.Layers[i].Size {
			t.Errorf("layer %d blob changed when adding recipients", i)
		}
		if after.Layers[i].Annotations[spec.AnnotationKeyPrefix+"pgp"] == "" {
			t.Errorf("layer %d: no pgp recipient added", i)
		}
	}
	for _, k := range []*testKey{a, b} {
		res, err := Decrypt(ctx, Artifact{Image: added.Image}, WithKeys(k))
		if err != nil {
			t.Fatalf("key %s after add: %v", k.scheme, err)
		}
		if digestOf(t, res.Image) != digestOf(t, img) {
			t.Errorf("key %s: wrong round trip digest", k.scheme)
		}
		res.Close()
	}
	rk, err := Rekey(ctx, Artifact{Image: added.Image}, []keyWrapper{c}, WithKeys(b))
	if err != nil {
		t.Fatal(err)
	}
	rm, _ := rk.Image.Manifest()
	for i := range rm.Layers {
		if rm.Layers[i].Digest != before.Layers[i].Digest {
			t.Errorf("rekey changed layer %d blob", i)
		}
		if _, ok := rm.Layers[i].Annotations[spec.AnnotationKeyPrefix+"pgp"]; ok {
			t.Errorf("rekey kept old pgp recipients on layer %d", i)
		}
	}
	for _, old := range []*testKey{a, b} {
		if _, err := Decrypt(ctx, Artifact{Image: rk.Image}, WithKeys(old)); !errors.Is(err, spec.ErrNoKey) {
			t.Errorf("old %s key after rekey: err = %v, want ErrNoKey", old.scheme, err)
		}
	}
	res, err := Decrypt(ctx, Artifact{Image: rk.Image}, WithKeys(c))
	if err != nil || digestOf(t, res.Image) != digestOf(t, img) {
		t.Fatalf("new key after rekey: %v", err)
	}
	res.Close()
}

func TestDockerSourceIsConverted(t *testing.T) {
	img, err := random.Image(512, 2) // Docker schema 2 with Docker layer types
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := img.MediaType(); mt != types.DockerManifestSchema2 {
		t.Fatalf("fixture media type %s", mt)
	}
	k := newTestKey(t, "jwe")
	res, _ := encryptOne(t, img, k)
	m, _ := res.Image.Manifest()
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("manifest %s config %s, want OCI", m.MediaType, m.Config.MediaType)
	}
	for i, l := range m.Layers {
		if l.MediaType != types.OCILayer+"+encrypted" {
			t.Errorf("layer %d media type %s", i, l.MediaType)
		}
	}
	dec, err := Decrypt(context.Background(), Artifact{Image: res.Image}, WithKeys(k))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	orig := layerBytes(t, img)
	for i, b := range layerBytes(t, dec.Image) {
		if !bytes.Equal(b, orig[i]) {
			t.Errorf("layer %d differs after round trip", i)
		}
	}
}

func TestIndexPlatforms(t *testing.T) {
	ctx := context.Background()
	amd, arm := ociImage(t, 1), ociImage(t, 2)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	k := newTestKey(t, "jwe")
	res, err := Encrypt(ctx, Artifact{Index: idx}, []keyWrapper{k}, WithPlatforms(v1.Platform{OS: "linux", Architecture: "arm64"}))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if res.Layers != 2 {
		t.Errorf("changed layers = %d, want 2", res.Layers)
	}
	im, _ := res.Index.IndexManifest()
	if im.Manifests[0].Digest != digestOf(t, amd) {
		t.Errorf("unselected amd64 manifest changed")
	}
	encArm, err := res.Index.Image(im.Manifests[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Inspect(ctx, Artifact{Index: res.Index}, func(s string, e []byte) ([]string, error) { return []string{"r:" + s}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Manifests) != 2 || rep.Manifests[0].Layers[0].Encrypted || !rep.Manifests[1].Layers[1].Encrypted ||
		rep.Manifests[1].Platform.Architecture != "arm64" || rep.Manifests[1].Layers[0].Schemes[0].Recipients[0] != "r:jwe" {
		j, _ := json.Marshal(rep)
		t.Errorf("inspect = %s", j)
	}
	// Decrypt the whole index: the digest comes back.
	dec, err := Decrypt(ctx, Artifact{Index: res.Index}, WithKeys(k))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	d1, _ := dec.Index.Digest()
	d0, _ := idx.Digest()
	if d1 != d0 {
		t.Errorf("index digest after round trip %s, want %s", d1, d0)
	}
	_ = encArm
}

func TestSpliceKeepsUnknownFields(t *testing.T) {
	raw := []byte(`{"schemaVersion":2, "zzz":{"x":1},"layers" : [ {"a":1} ],"tail":true}`)
	got, err := spliceTopLevel(raw, "layers", []byte(`[2]`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"schemaVersion":2, "zzz":{"x":1},"layers" : [2],"tail":true}`; string(got) != want {
		t.Errorf("splice = %s, want %s", got, want)
	}
	if _, err := spliceTopLevel(raw, "nope", nil); err == nil {
		t.Error("missing key: no error")
	}
}

func FuzzSplice(f *testing.F) {
	f.Add([]byte(`{"layers":[{"a":1}],"b":2}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		out, err := spliceTopLevel(raw, "layers", []byte(`[]`))
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) == nil && json.Unmarshal(out, &m) != nil {
			t.Fatalf("valid input %q spliced into invalid JSON %q", raw, out)
		}
	})
}

// A source blob that does not match its descriptor is refused (unless the
// caller vouches for the source).
func TestEncryptVerifiesSource(t *testing.T) {
	img := ociImage(t, 1)
	m, _ := img.Manifest()
	b := layerBytes(t, img)[0]
	b[5] ^= 1
	bad := swapped{img, m.Layers[0].Digest, b}
	k := newTestKey(t, "jwe")
	_, err := Encrypt(context.Background(), Artifact{Image: bad}, []keyWrapper{k}, WithTempDir(t.TempDir()))
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "does not match its descriptor") {
		t.Fatalf("corrupt source: err = %v", err)
	}
	res, err := Encrypt(context.Background(), Artifact{Image: bad}, []keyWrapper{k}, WithTempDir(t.TempDir()), WithTrustedSource(true))
	if err != nil {
		t.Fatalf("trusted source: %v", err)
	}
	res.Close()
	short := swapped{img, m.Layers[0].Digest, b[:len(b)-1]}
	if _, err := Encrypt(context.Background(), Artifact{Image: short}, []keyWrapper{k}, WithTrustedSource(true)); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("short source with trust: err = %v, want ErrIntegrity (size check stays)", err)
	}
}
