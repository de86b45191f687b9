package ctddecoder_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/runtime/nodecfg"
	"github.com/coffer-dev/coffer/runtime/tenant"
	"github.com/coffer-dev/coffer/transport"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

type node struct {
	*testutil.Containerd
	keys string // node key directory
}

func startNode(t *testing.T, perNamespace bool) node {
	t.Helper()
	return startNodeWith(t, nodecfg.Install{PerNamespace: perNamespace})
}

func startNodeWith(t *testing.T, in nodecfg.Install) node {
	t.Helper()
	coffer := testutil.BuildCoffer(t)
	keys := t.TempDir()
	// The stanza `coffer runtime install containerd` writes.
	c := testutil.StartContainerd(t, func(root string) string {
		in.Coffer, in.KeysPath, in.ContainerdRoot, in.Socket = coffer, keys, root, filepath.Join(filepath.Dir(root), "c.sock")
		s, err := in.Stanza()
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	return node{c, keys}
}

func ecKey(t testing.TB, dir, name string) (pubPath string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	if dir != "" {
		os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pubPath = filepath.Join(t.TempDir(), name+".pub")
	os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	return pubPath
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// ociArchive writes an OCI image archive tagged v1 from a raw manifest and
// its blobs (config and layers), byte for byte as given.
func ociArchive(t *testing.T, manifest []byte, blobs ...[]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	put := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	md, _, _ := v1.SHA256(bytes.NewReader(manifest))
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", []byte(fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`, md, len(manifest))))
	put("blobs/sha256/"+md.Hex, manifest)
	for _, b := range blobs {
		h, _, _ := v1.SHA256(bytes.NewReader(b))
		put("blobs/sha256/"+h.Hex, b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// encrypted encrypts the selected layers of img for pub (a public key file,
// or a full recipient such as provider:…).
func encrypted(t testing.TB, img v1.Image, pub string, layers ...int) v1.Image {
	t.Helper()
	ctx := context.Background()
	if !strings.Contains(pub, ":") {
		pub = "jwe:" + pub
	}
	w, err := recipients.ParseRecipients(ctx, []string{pub}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, w, imagecrypt.WithLayers(layers...), imagecrypt.WithTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return res.Artifact.Image
}

// archive serializes img; tamper, when set, flips one byte in the middle of
// the last layer's blob and fixes the manifest's digest for it, so only the
// layer's HMAC can notice.
func archive(t *testing.T, img v1.Image, tamper bool) string {
	t.Helper()
	raw, _ := img.RawManifest()
	cfg, _ := img.RawConfigFile()
	ls, _ := img.Layers()
	blobs := [][]byte{cfg}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		blobs = append(blobs, b)
	}
	if tamper {
		last := bytes.Clone(blobs[len(blobs)-1])
		old, _, _ := v1.SHA256(bytes.NewReader(last))
		last[len(last)/2] ^= 0x01
		nd, _, _ := v1.SHA256(bytes.NewReader(last))
		raw = bytes.ReplaceAll(raw, []byte(old.String()), []byte(nd.String()))
		blobs[len(blobs)-1] = last
	}
	return ociArchive(t, raw, blobs...)
}

// committed lists the names of the committed snapshots of namespace ns.
func committed(t *testing.T, n node, ns string) []string {
	t.Helper()
	out, err := n.Ctr(ctx(t), ns, "snapshots", "--snapshotter", "native", "ls")
	if err != nil {
		t.Fatalf("ctr snapshots ls: %v\n%s", err, out)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[len(f)-1] == "Committed" {
			names = append(names, f[0])
		}
	}
	return names
}

// A stock containerd, configured with coffer's decoder as its stream
// processor, imports (no payload: plain ctr) and runs encrypted images.
func TestContainerdRunsCofferEncryptedImages(t *testing.T) {
	n := startNode(t, false)
	pub := ecKey(t, n.keys, "node.pem")
	stranger := ecKey(t, "", "stranger.pem")
	secret := func(name, comp string) testutil.Layer {
		return testutil.Layer{Files: map[string][]byte{name: []byte("only in " + name + "\n")}, Compression: comp}
	}
	for i, tc := range []struct {
		name    string
		img     v1.Image
		pub     string
		layers  []int // encrypted layers (nil: all)
		tamper  bool
		cat     []string
		wantErr string // import fails with this
	}{
		{name: "gzip layer", img: testutil.BusyboxImage(t, secret("a.txt", "gzip")), pub: pub, layers: []int{-1}, cat: []string{"/a.txt"}},
		{name: "zstd layer", img: testutil.BusyboxImage(t, secret("a.txt", "zstd")), pub: pub, layers: []int{-1}, cat: []string{"/a.txt"}},
		{name: "multi-layer, every layer encrypted", img: testutil.BusyboxImage(t, secret("a.txt", ""), secret("b.txt", "zstd"), secret("c.txt", "gzip")), pub: pub, cat: []string{"/a.txt", "/b.txt", "/c.txt"}},
		{name: "key missing", img: testutil.BusyboxImage(t, secret("a.txt", "gzip")), pub: stranger, layers: []int{-1}, wantErr: "no key available to the decoder opens this layer"},
		{name: "tampered layer", img: testutil.BusyboxImage(t, secret("a.txt", "gzip")), pub: pub, layers: []int{-1}, tamper: true, wantErr: "HMAC mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := fmt.Sprintf("case%d", i)
			arch := archive(t, encrypted(t, tc.img, tc.pub, tc.layers...), tc.tamper)
			out, err := n.Ctr(ctx(t), ns, "images", "import", "--snapshotter", "native", "--base-name", "coffer.test/app", arch)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(out, tc.wantErr) {
					t.Fatalf("import: err = %v, want a failure saying %q:\n%s", err, tc.wantErr, out)
				}
				// The failed layer's snapshot was not committed (the plain
				// layer below may be, until containerd's GC drops it).
				cfg, _ := tc.img.ConfigFile()
				chains := tenant.ChainIDs(cfg.RootFS.DiffIDs)
				for _, name := range committed(t, n, ns) {
					if name != chains[0] {
						t.Errorf("snapshot %s committed after the failure; only the plain layer's %s may be", name, chains[0])
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("import: %v\n%s", err, out)
			}
			out, err = n.Ctr(ctx(t), ns, append([]string{"run", "--rm", "--snapshotter", "native", "coffer.test/app:v1", "c" + ns, "/bin/busybox", "cat"}, tc.cat...)...)
			if err != nil {
				t.Fatalf("ctr run: %v\n%s", err, out)
			}
			var want string
			for _, f := range tc.cat {
				want += "only in " + strings.TrimPrefix(f, "/") + "\n"
			}
			if out != want {
				t.Errorf("container printed %q, want %q", out, want)
			}
		})
	}
}

// Per-tenant keys: each containerd namespace opens only images encrypted
// for the keys in its own directory, on one node and one containerd.
func TestContainerdPerNamespaceKeys(t *testing.T) {
	n := startNode(t, true)
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		os.Mkdir(filepath.Join(n.keys, ns), 0o700)
	}
	pubA := ecKey(t, filepath.Join(n.keys, "tenant-a"), "a.pem")
	pubB := ecKey(t, filepath.Join(n.keys, "tenant-b"), "b.pem")
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("tenant secret\n")}, Compression: "gzip"})
	archA := archive(t, encrypted(t, img, pubA, -1), false)
	// B's secret differs: the same plaintext layer, once unpacked in a
	// namespace, is not unpacked there again, whoever encrypted it.
	imgB := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("tenant B secret\n")}, Compression: "gzip"})
	archB := archive(t, encrypted(t, imgB, pubB, -1), false)
	for _, tc := range []struct {
		ns, arch, wantErr string
	}{
		// Each namespace's good import comes before its refused one: a
		// refused import's half-unpacked base snapshot is collected by
		// containerd's GC, which could race the next import's parent
		// lookup; a stored image keeps the shared base referenced.
		{"tenant-a", archA, ""},
		{"tenant-b", archB, ""},
		{"tenant-b", archA, "no key available to the decoder opens this layer"},
		{"tenant-c", archA, "no key directory"},
		{"tenant-a", archB, "no key available to the decoder opens this layer"},
	} {
		// One image name per archive: re-pointing a name would let
		// containerd's GC drop the other image's snapshots mid-test.
		name := map[string]string{archA: "coffer.test/a", archB: "coffer.test/b"}[tc.arch]
		out, err := n.Ctr(ctx(t), tc.ns, "images", "import", "--snapshotter", "native", "--base-name", name, tc.arch)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(out, tc.wantErr) {
				t.Errorf("%s importing %s: err = %v, want %q:\n%s", tc.ns, filepath.Base(filepath.Dir(tc.arch)), err, tc.wantErr, out)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: import: %v\n%s", tc.ns, err, out)
		}
		out, err = n.Ctr(ctx(t), tc.ns, "run", "--rm", "--snapshotter", "native", name+":v1", "c-"+tc.ns, "/bin/busybox", "cat", "/secret.txt")
		if want := map[string]string{"tenant-a": "tenant secret\n", "tenant-b": "tenant B secret\n"}[tc.ns]; err != nil || out != want {
			t.Errorf("%s: ctr run: %v, printed %q", tc.ns, err, out)
		}
	}
}

// CoCo-style node: no key on the node; the decoder asks coffer's keyprovider
// (OCICRYPT_KEYPROVIDER_CONFIG in the stanza's env), which attests to a key
// broker and gets the layer KEK only while the broker's policy allows it.
func TestContainerdKeyproviderThroughBroker(t *testing.T) {
	b := kbstest.New(t)
	kek := make([]byte, 32)
	rand.Read(kek)
	b.SetResource(t, "default/image_key/app", kek)
	b.AllowAll(t)
	dir := t.TempDir()
	kekFile := filepath.Join(dir, "kek")
	os.WriteFile(kekFile, kek, 0o600)
	kp := filepath.Join(dir, "ocicrypt_keyprovider.conf")
	cfg := fmt.Sprintf(`{"key-providers":{"attestation-agent":{"cmd":{"path":%q,"args":["keyprovider","--kbs",%q,"--tee","sample"]}}}}`, testutil.BuildCoffer(t), b.URL)
	os.WriteFile(kp, []byte(cfg), 0o600)
	n := startNodeWith(t, nodecfg.Install{KeyProviderConfig: kp})
	recipient := "provider:attestation-agent:keypath=" + kekFile + "::keyid=kbs:///default/image_key/app"
	mk := func(s string) string {
		img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte(s)}, Compression: "gzip"})
		return archive(t, encrypted(t, img, recipient, -1), false)
	}
	out, err := n.Ctr(ctx(t), "default", "images", "import", "--snapshotter", "native", "--base-name", "coffer.test/app", mk("released by the broker\n"))
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	out, err = n.Ctr(ctx(t), "default", "run", "--rm", "--snapshotter", "native", "coffer.test/app:v1", "c1", "/bin/busybox", "cat", "/secret.txt")
	if err != nil || out != "released by the broker\n" {
		t.Fatalf("ctr run: %v, %q", err, out)
	}
	b.DenyAll(t)
	out, err = n.Ctr(ctx(t), "other", "images", "import", "--snapshotter", "native", "--base-name", "coffer.test/app", mk("not released\n"))
	if err == nil || !strings.Contains(out, "attestation-agent") {
		t.Fatalf("import with the broker denying: err = %v:\n%s", err, out)
	}
	t.Logf("denied import: %s", strings.TrimSpace(out))
}

// Images other tools encrypted run too: skopeo (ocicrypt wraps the blob
// digest) and skopeo recompressing gzip to zstd while encrypting (it wraps
// the digest of the gzip blob that no longer exists: checked against the
// image config's diffID found in containerd's content store).
func TestContainerdRunsSkopeoEncryptedImages(t *testing.T) {
	testutil.RequireTool(t, "skopeo")
	n := startNode(t, false)
	pub := ecKey(t, n.keys, "node.pem")
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("encrypted by skopeo\n")}, Compression: "gzip"})
	src := filepath.Join(t.TempDir(), "src")
	ref, _ := transport.Parse("oci:" + src + ":v1")
	if err := transport.Write(context.Background(), ref, transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	for i, extra := range [][]string{nil, {"--dest-compress-format", "zstd"}} {
		enc := filepath.Join(t.TempDir(), "enc")
		args := append([]string{"copy", "-q", "--encryption-key", "jwe:" + pub}, extra...)
		if out, err := exec.CommandContext(ctx(t), "skopeo", append(args, "oci:"+src+":v1", "oci:"+enc+":v1")...).CombinedOutput(); err != nil {
			t.Fatalf("skopeo: %v\n%s", err, out)
		}
		eref, _ := transport.Parse("oci:" + enc + ":v1")
		a, done, err := transport.Read(context.Background(), eref)
		if err != nil {
			t.Fatal(err)
		}
		arch := archive(t, a.Image, false)
		done()
		ns := fmt.Sprintf("skopeo%d", i)
		if out, err := n.Ctr(ctx(t), ns, "images", "import", "--snapshotter", "native", "--base-name", "coffer.test/app", arch); err != nil {
			t.Fatalf("%v: import: %v\n%s", extra, err, out)
		}
		out, err := n.Ctr(ctx(t), ns, "run", "--rm", "--snapshotter", "native", "coffer.test/app:v1", "c"+ns, "/bin/busybox", "cat", "/secret.txt")
		if err != nil || out != "encrypted by skopeo\n" {
			t.Errorf("%v: ctr run: %v, %q", extra, err, out)
		}
	}
}

// ctr images pull from a registry (no payload either) unpacks through the
// decoder too.
func TestContainerdPullsFromRegistry(t *testing.T) {
	n := startNode(t, false)
	pub := ecKey(t, n.keys, "node.pem")
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("pulled and decrypted\n")}, Compression: "zstd"})
	ref, _ := transport.Parse("docker://" + host + "/app:enc")
	if err := transport.Write(context.Background(), ref, transport.Artifact{Image: encrypted(t, img, pub)}); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Ctr(ctx(t), "default", "images", "pull", "--plain-http", "--snapshotter", "native", host+"/app:enc"); err != nil {
		t.Fatalf("ctr images pull: %v\n%s", err, out)
	}
	out, err := n.Ctr(ctx(t), "default", "run", "--rm", "--snapshotter", "native", host+"/app:enc", "c1", "/bin/busybox", "cat", "/secret.txt")
	if err != nil || out != "pulled and decrypted\n" {
		t.Errorf("ctr run: %v, %q", err, out)
	}
}

// Per-image keys serve only pulls that name their image reference (CRI's
// snapshot label): a plain ctr import, which names none, is refused with
// the reason, even though the node holds the key under that image's prefix.
func TestContainerdPerImageKeysRefuseUnlabelledUnpacks(t *testing.T) {
	n := startNodeWith(t, nodecfg.Install{PerImage: true})
	dir := filepath.Join(n.keys, "by-image", "coffer.test")
	os.MkdirAll(dir, 0o700)
	pub := ecKey(t, dir, "k.pem")
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("per-image secret\n")}, Compression: "gzip"})
	arch := archive(t, encrypted(t, img, pub, -1), false)
	out, err := n.Ctr(ctx(t), "default", "images", "import", "--snapshotter", "native", "--base-name", "coffer.test/a", arch)
	if err == nil || !strings.Contains(out, "per-image keys: the extraction of layer") || !strings.Contains(out, "names no image reference") {
		t.Errorf("import under per-image keys: %v, want the no-reference refusal:\n%s", err, out)
	}
}
