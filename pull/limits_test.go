package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/internal/hostile"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
	"github.com/coffer-dev/coffer/unpack"
)

var amd64 = WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})

// TestPullSparseBomb performs the attack of issue 12 (finding 3) end to
// end: pulling an image whose layer declares a 1 EiB sparse file used to
// spin until killed; it must fail at once and leave nothing behind.
func TestPullSparseBomb(t *testing.T) {
	ref, key, _ := encryptedImage(t, "docker://", static.NewLayer(hostile.GNUSparseTar("bomb", 1<<60, 1<<60-4, "boom"), types.OCIUncompressedLayer))
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := Pull(ctx, ref, filepath.Join(dir, "rootfs"), WithKeys(key), amd64)
	if took := time.Since(start); !errors.Is(err, unpack.ErrTooLarge) || !errors.Is(err, spec.ErrIntegrity) || took > 2*time.Second {
		t.Errorf("err = %v after %v, want unpack.ErrTooLarge at once", err, took)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %d entries next to the rootfs", len(left))
	}
}

// WithUnpack reaches unpack: a lower file size limit refuses the fixture.
func TestPullUnpackLimits(t *testing.T) {
	ref, key, _ := fixture(t)
	dir := t.TempDir()
	err := Pull(context.Background(), ref, filepath.Join(dir, "rootfs"), WithKeys(key), amd64,
		WithUnpack(unpack.WithMaxFileSize(8)))
	if !errors.Is(err, unpack.ErrTooLarge) || !strings.Contains(err.Error(), "limit of 8 bytes per file") {
		t.Errorf("err = %v, want unpack.ErrTooLarge naming the 8-byte limit", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %d entries next to the rootfs", len(left))
	}
}

// TestPullDeclaredSize performs the attack of issue 12 (finding 4) end to
// end: an OCI layout whose manifest declares 40 GiB for its first, small,
// encrypted layer. Staging used to reserve the declared size (fallocate,
// which keeps the blocks after close). Layers are decrypted one at a time
// here, and every key unwrap measures the staging directory, so the second
// layer's unwrap sees what staging the first one reserved.
func TestPullDeclaredSize(t *testing.T) {
	const declared = 40 << 30
	ref, key, _ := encryptedImage(t, "oci:", tarLayer(t, map[string]string{"f": "hi"}), tarLayer(t, map[string]string{"g": "ho"}))
	layout := strings.TrimSuffix(strings.TrimPrefix(ref.String(), "oci:"), ":enc")
	declareSize(t, layout, declared)
	dir := t.TempDir()
	spy := &stagingSpy{Unwrapper: key, glob: filepath.Join(dir, ".coffer-pull-*", "*")}
	err := Pull(context.Background(), ref, filepath.Join(dir, "rootfs"), WithKeys(spy), WithJobs(1), amd64)
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), fmt.Sprintf("descriptor declares %d", declared)) {
		t.Errorf("err = %v, want spec.ErrIntegrity about the declared size", err)
	}
	if got := spy.maxDisk.Load(); got > 1<<20 {
		t.Errorf("a staged file occupied %d bytes on disk", got)
	}
	if spy.samples.Load() == 0 {
		t.Error("the staging directory was never measured")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %d entries next to the rootfs", len(left))
	}
}

// stagingSpy is an unwrapper that, before each unwrap, records the most
// disk (st_blocks, preallocated blocks included) any staged file occupies.
type stagingSpy struct {
	keywrap.Unwrapper
	glob             string
	maxDisk, samples atomic.Int64
}

func (s *stagingSpy) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	s.samples.Add(1)
	staged, _ := filepath.Glob(s.glob)
	for _, p := range staged {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && st.Blocks*512 > s.maxDisk.Load() {
			s.maxDisk.Store(st.Blocks * 512)
		}
	}
	return s.Unwrapper.Unwrap(ctx, entry)
}

func declareSize(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := hostile.DeclareLayerSize(dir, size); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// A plain (never encrypted) layer is held to its declared size too: longer
// or shorter than the manifest says fails with spec.ErrIntegrity.
func TestPullPlainLayerDeclaredSize(t *testing.T) {
	for _, declared := range []int64{40 << 30, 100} {
		dir := t.TempDir()
		ref := plainLayout(t, dir, nil)
		declareSize(t, filepath.Join(dir, "img"), declared)
		err := Pull(context.Background(), ref, filepath.Join(dir, "rootfs"), amd64)
		if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), fmt.Sprint(declared)) {
			t.Errorf("declared %d: err = %v, want spec.ErrIntegrity about the declared size", declared, err)
		}
		if _, serr := os.Stat(filepath.Join(dir, "rootfs")); serr == nil {
			t.Errorf("declared %d: a rootfs was left", declared)
		}
	}
}

// A layer that does not match the diff_id its config names fails the pull
// (spec.ErrIntegrity), end to end, and leaves no rootfs.
func TestPullDiffIDMismatch(t *testing.T) {
	other, _ := tarLayer(t, map[string]string{"f": "something else"}).DiffID()
	dir := t.TempDir()
	ref := plainLayout(t, dir, func(cfg *v1.ConfigFile) { cfg.RootFS.DiffIDs[0] = other })
	err := Pull(context.Background(), ref, filepath.Join(dir, "rootfs"), amd64)
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "diff") {
		t.Fatalf("pull of a layer that is not its diff_id: %v, want spec.ErrIntegrity", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "rootfs")); serr == nil {
		t.Fatal("a rootfs was left")
	}
}

// plainLayout writes a one-layer plain image (file f = "hi") to dir/img:v1,
// its config edited by edit when not nil.
func plainLayout(t *testing.T, dir string, edit func(*v1.ConfigFile)) transport.Reference {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), tarLayer(t, map[string]string{"f": "hi"}))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	if edit != nil {
		edit(cfg)
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref, err := transport.Parse("oci:" + filepath.Join(dir, "img") + ":v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Write(context.Background(), ref, transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	return ref
}
