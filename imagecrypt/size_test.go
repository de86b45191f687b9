package imagecrypt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/spec"
)

// declared is what the forged descriptors of issue 12 (finding 4) claim.
const declared = 40 << 30

// spy watches a staging directory while a blob is read: before every read
// of the blob it records the most disk any file there occupies (st_blocks,
// which counts preallocated blocks too), and it counts the bytes it served.
type spy struct {
	dir     string
	maxDisk atomic.Int64
	served  atomic.Int64
}

func (s *spy) sample() {
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(s.dir, e.Name()), &st) == nil && st.Blocks*512 > s.maxDisk.Load() {
			s.maxDisk.Store(st.Blocks * 512)
		}
	}
}

type spyReader struct {
	r io.Reader
	s *spy
}

func (r spyReader) Read(p []byte) (int, error) {
	r.s.sample()
	n, err := r.r.Read(p)
	r.s.served.Add(int64(n))
	return n, err
}

// forgedLayer is a layer whose descriptor claims size bytes while its blob
// is the real one followed by extra filler bytes, served through a spy.
type forgedLayer struct {
	v1.Layer
	blob  []byte
	size  int64
	extra int64
	s     *spy
}

func (l forgedLayer) Size() (int64, error) { return l.size, nil }
func (l forgedLayer) Compressed() (io.ReadCloser, error) {
	filler := io.LimitReader(neverEnding('x'), l.extra)
	return io.NopCloser(spyReader{io.MultiReader(bytes.NewReader(l.blob), filler), l.s}), nil
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// forge rebuilds img's first layer with a descriptor claiming size bytes
// and extra bytes appended to its blob.
func forge(t *testing.T, img v1.Image, size, extra int64, s *spy) v1.Image {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	d := m.Layers[0]
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:       forgedLayer{Layer: l, blob: layerBytes(t, img)[0], size: size, extra: extra, s: s},
		Annotations: d.Annotations, MediaType: d.MediaType,
	})
	if err != nil {
		t.Fatal(err)
	}
	if fm, _ := forged.Manifest(); fm.Layers[0].Size != size {
		t.Fatalf("forged descriptor says %d bytes, want %d", fm.Layers[0].Size, size)
	}
	return forged
}

// run encrypts (key == nil) or decrypts img, staging in a fresh directory
// watched by s, and checks that it fails with ErrIntegrity mentioning msg,
// leaving no staged file.
func run(t *testing.T, s *spy, k *testKey, mk func(*spy) v1.Image, msg string) {
	t.Helper()
	s.dir = t.TempDir()
	img := mk(s)
	var err error
	if k == nil {
		_, err = Encrypt(context.Background(), Artifact{Image: img}, []keyWrapper{newTestKey(t, "jwe")}, WithTempDir(s.dir))
	} else {
		_, err = Decrypt(context.Background(), Artifact{Image: img}, WithKeys(k), WithTempDir(s.dir))
	}
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), msg) {
		t.Errorf("err = %v, want spec.ErrIntegrity saying %q", err, msg)
	}
	if left, _ := os.ReadDir(s.dir); len(left) != 0 {
		t.Errorf("%d staged files left after the failure", len(left))
	}
}

// TestDeclaredSizeIsNotReserved performs the attack of issue 12 (finding
// 4): a small layer whose descriptor declares 40 GiB. Staging used to
// fallocate the declared size; now nothing is reserved from it and the
// short blob fails the size check.
func TestDeclaredSizeIsNotReserved(t *testing.T) {
	k := newTestKey(t, "jwe")
	plain := ociImage(t, 1)
	_, enc := encryptOne(t, plain, k)
	for name, c := range map[string]struct {
		img v1.Image
		key *testKey
	}{"decrypt": {enc, k}, "encrypt": {plain, nil}} {
		t.Run(name, func(t *testing.T) {
			s := &spy{}
			run(t, s, c.key, func(s *spy) v1.Image { return forge(t, c.img, declared, 0, s) }, "descriptor declares 42949672960")
			if got := s.maxDisk.Load(); got > 1<<20 {
				t.Errorf("a staged file occupied %d bytes on disk for a %d-byte blob", got, len(layerBytes(t, c.img)[0]))
			}
		})
	}
}

// A blob longer than its descriptor says is cut off one byte past the
// declared size, not read (and staged) to its end.
func TestBlobLongerThanDeclared(t *testing.T) {
	k := newTestKey(t, "jwe")
	plain := ociImage(t, 1)
	_, enc := encryptOne(t, plain, k)
	for name, c := range map[string]struct {
		img v1.Image
		key *testKey
	}{"decrypt": {enc, k}, "encrypt": {plain, nil}} {
		t.Run(name, func(t *testing.T) {
			size := int64(len(layerBytes(t, c.img)[0]))
			s := &spy{}
			run(t, s, c.key, func(s *spy) v1.Image { return forge(t, c.img, size, 64<<20, s) }, "longer than the")
			if got := s.served.Load(); got != size+1 {
				t.Errorf("read %d bytes of a blob declared as %d, want %d", got, size, size+1)
			}
		})
	}
}

func TestNegativeDeclaredSize(t *testing.T) {
	k := newTestKey(t, "jwe")
	_, enc := encryptOne(t, ociImage(t, 1), k)
	run(t, &spy{}, k, func(s *spy) v1.Image { return forge(t, enc, -1, 0, s) }, "negative size")
}
