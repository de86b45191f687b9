package unpack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/hostile"
	"github.com/coffer-dev/coffer/spec"
)

const eib = int64(1) << 60

var sparseForms = []struct {
	name string
	mk   func(name string, realSize, off int64, data string) []byte
}{{"old GNU", hostile.GNUSparseTar}, {"PAX 1.0", hostile.PAXSparseTar}}

// TestSparseBomb performs the attack of issue 12 (finding 3): a layer of a
// few hundred bytes declaring a 1 EiB sparse file. archive/tar expands the
// hole into zeros, and unpack used to read all of them; it must now refuse
// the entry from its header, at once.
func TestSparseBomb(t *testing.T) {
	for _, form := range sparseForms {
		t.Run(form.name, func(t *testing.T) {
			raw := form.mk("bomb", eib, eib-4, "boom")
			blob := gzipped(t, raw)
			s := newSandbox(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			err := Apply(ctx, s.rootfs, []Layer{layerOf(spec.MediaTypeLayerGzip, blob, diffID(raw))})
			took := time.Since(start)
			t.Logf("%d-byte layer: %v after %v", len(blob), err, took)
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, spec.ErrIntegrity) {
				t.Errorf("err = %v, want ErrTooLarge (and spec.ErrIntegrity)", err)
			}
			if took > 2*time.Second {
				t.Errorf("took %v, want it refused at once", took)
			}
			s.noRootfs(t)
		})
	}
}

// Sparse files within the limits unpack with their data and their holes.
func TestSparseForms(t *testing.T) {
	const size = 1 << 30
	for _, form := range sparseForms {
		t.Run(form.name, func(t *testing.T) {
			s := newSandbox(t)
			if err := apply(t, s, tarLayers(form.mk("sparse", size, size-4, "tail"))); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			p := filepath.Join(s.rootfs, "sparse")
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != size {
				t.Errorf("size: got %d, want %d", fi.Size(), size)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := make([]byte, 4)
			if _, err := f.ReadAt(got, size-4); err != nil || string(got) != "tail" {
				t.Errorf("last 4 bytes: got %q, %v; want %q", got, err, "tail")
			}
			if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 1<<20 {
				t.Errorf("sparse file uses %d bytes on disk, want its holes kept", used)
			}
		})
	}
}

func TestMaxFileSize(t *testing.T) {
	body := string(bytes.Repeat([]byte("x"), 1000))
	layer := mkTar(t, ent{name: "f", body: body})
	s := newSandbox(t)
	if err := apply(t, s, tarLayers(layer), WithMaxFileSize(1000)); err != nil {
		t.Fatalf("file at the limit: %v", err)
	}
	s = newSandbox(t)
	err := apply(t, s, tarLayers(layer), WithMaxFileSize(999))
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("file over the limit: err = %v, want ErrTooLarge", err)
	}
	s.noRootfs(t)
	// A sparse file counts with its holes.
	s = newSandbox(t)
	if err := apply(t, s, tarLayers(hostile.GNUSparseTar("s", 1<<20, 0, "x")), WithMaxFileSize(1<<20-1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("sparse file over the limit: err = %v, want ErrTooLarge", err)
	}
}

func TestMaxRootfsSize(t *testing.T) {
	l1 := mkTar(t, ent{name: "a", body: string(make([]byte, 600))}, ent{name: "b", body: string(make([]byte, 400))})
	l2 := mkTar(t, ent{name: "a", body: string(make([]byte, 500))}) // replacing a file still counts
	s := newSandbox(t)
	if err := apply(t, s, tarLayers(l1, l2), WithMaxRootfsSize(1500)); err != nil {
		t.Fatalf("rootfs at the limit: %v", err)
	}
	s = newSandbox(t)
	err := apply(t, s, tarLayers(l1, l2), WithMaxRootfsSize(1499))
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("rootfs over the limit: err = %v, want ErrTooLarge", err)
	}
	if want := "layer 1: entry \"a\""; err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("err = %v, want it to name %s", err, want)
	}
	s.noRootfs(t)
	// ApplyLayer counts one layer.
	dir := t.TempDir()
	if err := ApplyLayer(context.Background(), dir, bytes.NewReader(l1), WithMaxRootfsSize(999)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ApplyLayer over the limit: err = %v, want ErrTooLarge", err)
	}
	for _, o := range []Option{WithMaxFileSize(0), WithMaxFileSize(-1), WithMaxRootfsSize(0), WithMaxRootfsSize(-5)} {
		if err := Apply(context.Background(), filepath.Join(t.TempDir(), "r"), nil, o); err == nil {
			t.Error("a non-positive limit was accepted")
		}
	}
}

// A sparse file within the limits still costs time (the zeros of its
// holes are read); a cancelled context must stop it promptly.
func TestSparseCancel(t *testing.T) {
	raw := hostile.GNUSparseTar("big", 60<<30, 60<<30-4, "tail") // 60 GiB: allowed by default
	s := newSandbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Apply(ctx, s.rootfs, []Layer{layerOf("", raw, diffID(raw))}) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	canceled := time.Now()
	select {
	case err := <-done:
		if took := time.Since(canceled); !errors.Is(err, context.Canceled) || took > time.Second {
			t.Errorf("after cancel: err = %v in %v, want context.Canceled within 1s", err, took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Apply still running 30s after cancel")
	}
	s.noRootfs(t)
}

// TestZstdWindow: a 10-byte zstd frame declaring a 512 MiB window made the
// decoder allocate 512 MiB; windows over 128 MiB are now refused.
func TestZstdWindow(t *testing.T) {
	frame := func(windowLog byte) []byte {
		// magic, frame header (no content size), window descriptor, one raw
		// last block holding "x".
		return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3, 0x09, 0x00, 0x00, 'x'}
	}
	for _, c := range []struct {
		log  byte
		want error
	}{{27, nil}, {28, spec.ErrUnsupported}, {29, spec.ErrUnsupported}} {
		r, err := Decompress("", bytes.NewReader(frame(c.log)), v1.Hash{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if c.want == nil && (err != nil || string(got) != "x") {
			t.Errorf("window 2^%d: got %q, %v; want %q", c.log, got, err, "x")
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("window 2^%d: err = %v, want %v", c.log, err, c.want)
		}
	}
}

// What follows the end-of-archive marker is read for the diffID, but only
// up to 1 MiB: padding is a few KiB, and a few KiB of compressed zeros
// could otherwise keep unpack decompressing and hashing for minutes.
func TestTrailingData(t *testing.T) {
	tarball := mkTar(t, ent{name: "f", body: "x"})
	for _, c := range []struct {
		trailing int
		ok       bool
	}{{10 << 10, true}, {1 << 20, true}, {1<<20 + 1, false}, {64 << 20, false}} {
		raw := append(bytes.Clone(tarball), make([]byte, c.trailing)...)
		s := newSandbox(t)
		err := apply(t, s, []Layer{layerOf(spec.MediaTypeLayerGzip, gzipped(t, raw), diffID(raw))})
		if c.ok && err != nil {
			t.Errorf("%d trailing bytes: %v", c.trailing, err)
		}
		if !c.ok && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%d trailing bytes: err = %v, want ErrTooLarge", c.trailing, err)
		}
	}
}
