package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/transport"
)

// buildahStore is a private buildah storage (vfs driver: no mounts to
// clean up) under a test temp dir.
type buildahStore struct{ root string }

func newBuildah(t *testing.T) buildahStore {
	t.Helper()
	testutil.RequireTool(t, "buildah")
	s := buildahStore{root: t.TempDir()}
	t.Cleanup(func() { s.cmd(t, "rm", "--all").Run() })
	return s
}

func (s buildahStore) cmd(t *testing.T, args ...string) *exec.Cmd {
	base := []string{"--root", filepath.Join(s.root, "root"), "--runroot", filepath.Join(s.root, "run"), "--storage-driver", "vfs"}
	return exec.CommandContext(t.Context(), "buildah", append(base, args...)...)
}

func (s buildahStore) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.cmd(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// lowerTemp is a temp dir whose path buildah accepts as an image name
// (lowercase; t.TempDir carries the test's name).
func lowerTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "coffer-buildah-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// ociAt stores img as oci:DIR:v1 under a lowercase dir.
func ociAt(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := filepath.Join(lowerTemp(t), "src")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":v1"
}

// configDiffIDs reads the diff_ids of the image at r.
func configDiffIDs(t *testing.T, r string) []v1.Hash {
	t.Helper()
	tr, err := transport.Parse(r)
	if err != nil {
		t.Fatal(err)
	}
	a, done, err := transport.Read(t.Context(), tr)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	cfg, err := a.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RootFS.DiffIDs
}

// buildah pulls, decrypts and runs an image coffer encrypted; a wrong key
// fails the pull.
func TestBuildahPullsAndRunsCofferEncrypted(t *testing.T) {
	t.Parallel()
	bh := newBuildah(t)
	testutil.RequireTool(t, "runc")
	k, other := newKeys(t), newKeys(t)
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("only in the encrypted layer\n")}, Compression: "gzip"})
	src := ociAt(t, img)
	enc := ref(filepath.Join(lowerTemp(t), "enc"), "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.ecPub, "--recipient", "jwe:"+k.rsaPub, "--layer", "-1", src, enc)

	if out, err := bh.cmd(t, "pull", "-q", "--decryption-key", other.ecPriv, enc).CombinedOutput(); err == nil {
		t.Fatalf("buildah pull with a key that is not a recipient succeeded:\n%s", out)
	}
	id := bh.run(t, "pull", "-q", "--decryption-key", k.ecPriv, enc)
	ctr := bh.run(t, "from", "-q", "--pull=never", id)
	// runc explicitly: buildah picks crun when both are installed, and crun
	// refuses hybrid cgroups (this CI VM's).
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	if got := bh.run(t, "run", "--runtime", runc, ctr, "/bin/busybox", "cat", "/secret.txt"); got != "only in the encrypted layer" {
		t.Errorf("buildah run printed %q", got)
	}
}

// Images buildah (containers/image) encrypts decrypt with coffer. buildah
// push compresses the uncompressed layers of its storage while encrypting
// and wraps the uncompressed digest; skopeo recompressing gzip to zstd
// wraps the digest of a blob that no longer exists. Both are accepted by
// what they can be checked against, and decrypt to the original diffIDs.
func TestCofferDecryptsBuildahAndSkopeoEncrypted(t *testing.T) {
	t.Parallel()
	bh := newBuildah(t)
	k := newKeys(t)
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("s3cret\n")}, Compression: "gzip"})
	src := ociAt(t, img)
	want := configDiffIDs(t, src)
	bh.run(t, "pull", "-q", src)
	name := "localhost/" + strings.TrimPrefix(strings.TrimSuffix(src, ":v1"), "oci:/") + ":latest"

	cases := []struct {
		name  string
		write func(dst string)
	}{
		{"buildah push gzip", func(dst string) {
			bh.run(t, "push", "-q", "--encryption-key", "jwe:"+k.ecPub, name, dst)
		}},
		{"buildah push zstd", func(dst string) {
			bh.run(t, "push", "-q", "--compression-format", "zstd", "--encryption-key", "jwe:"+k.ecPub, name, dst)
		}},
		{"skopeo recompress gzip to zstd", func(dst string) {
			testutil.RequireTool(t, "skopeo")
			run(t, "skopeo", "copy", "-q", "--dest-compress-format", "zstd", "--encryption-key", "jwe:"+k.ecPub, src, dst)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			enc := ref(filepath.Join(t.TempDir(), "enc"), "v1")
			tc.write(enc)
			for _, l := range readLayers(t, enc) {
				if !strings.HasSuffix(string(l.MediaType), "+encrypted") {
					t.Fatalf("writer left layer %s unencrypted", l.MediaType)
				}
			}
			dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
			mustCoffer(t, "decrypt", "--key", k.ecPriv, enc, dec)
			// Re-hash every decrypted layer: its uncompressed digest must be
			// the diffID the source image had.
			tr, _ := transport.Parse(dec)
			a, done, err := transport.Read(t.Context(), tr)
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			ls, _ := a.Image.Layers()
			for i, l := range ls {
				rc, err := l.Uncompressed()
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := v1.SHA256(rc)
				rc.Close()
				if err != nil || got != want[i] {
					t.Errorf("layer %d uncompressed digest %s (%v), want %s", i, got, err, want[i])
				}
			}
		})
	}
}
