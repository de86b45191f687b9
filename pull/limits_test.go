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

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
	"github.com/coffer-dev/coffer/unpack"
)

var amd64 = WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})

// sparseBomb is an old-GNU sparse tar entry (typeflag 'S', which
// archive/tar reads but cannot write) declaring a 1 EiB file with four
// bytes of data at its end, then the end-of-archive marker.
func sparseBomb() []byte {
	const size = int64(1) << 60
	num := func(f []byte, v int64) { // GNU base-256: these do not fit in octal
		f[0] = 0x80
		for i := len(f) - 1; i > 0 && v > 0; i-- {
			f[i], v = byte(v), v>>8
		}
	}
	h := make([]byte, 512)
	copy(h[0:], "bomb")
	copy(h[100:], "0000644\x000000000\x000000000\x0000000000004\x0000000000000\x00")
	h[156] = 'S'
	copy(h[257:], "ustar  \x00")
	num(h[386:398], size-4)
	copy(h[398:], "00000000004\x00")
	num(h[483:495], size)
	copy(h[148:], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	data := make([]byte, 512)
	copy(data, "boom")
	return append(append(h, data...), make([]byte, 1024)...)
}

// TestPullSparseBomb performs the attack of issue 12 (finding 3) end to
// end: pulling an image whose layer declares a 1 EiB sparse file used to
// spin until killed; it must fail at once and leave nothing behind.
func TestPullSparseBomb(t *testing.T) {
	ref, key, _ := encryptedImage(t, "docker://", static.NewLayer(sparseBomb(), types.OCIUncompressedLayer))
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

// declareSize rewrites the one manifest of the OCI layout at dir so that its
// first layer claims size bytes, as a hostile registry would.
func declareSize(t *testing.T, dir string, size int64) {
	t.Helper()
	blobPath := func(d v1.Hash) string { return filepath.Join(dir, "blobs", d.Algorithm, d.Hex) }
	var idx v1.IndexManifest
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	var m map[string]json.RawMessage
	readJSON(t, blobPath(idx.Manifests[0].Digest), &m)
	var layers []v1.Descriptor
	if err := json.Unmarshal(m["layers"], &layers); err != nil {
		t.Fatal(err)
	}
	layers[0].Size = size
	m["layers"], _ = json.Marshal(layers)
	raw, _ := json.Marshal(m)
	h, n, _ := v1.SHA256(strings.NewReader(string(raw)))
	if err := os.WriteFile(blobPath(h), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	idx.Manifests[0].Digest, idx.Manifests[0].Size = h, n
	raw, _ = json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), raw, 0o644); err != nil {
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
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), tarLayer(t, map[string]string{"f": "hi"}))
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigFile()
		cfg.OS, cfg.Architecture = "linux", "amd64"
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		ref, err := transport.Parse("oci:" + filepath.Join(dir, "img") + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := transport.Write(context.Background(), ref, transport.Artifact{Image: img}); err != nil {
			t.Fatal(err)
		}
		declareSize(t, filepath.Join(dir, "img"), declared)
		err = Pull(context.Background(), ref, filepath.Join(dir, "rootfs"), amd64)
		if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), fmt.Sprint(declared)) {
			t.Errorf("declared %d: err = %v, want spec.ErrIntegrity about the declared size", declared, err)
		}
		if _, serr := os.Stat(filepath.Join(dir, "rootfs")); serr == nil {
			t.Errorf("declared %d: a rootfs was left", declared)
		}
	}
}
