package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/coffer-dev/coffer/spec"
)

var (
	benchOnce  sync.Once
	benchTar   []byte
	benchBytes int64 // payload bytes in benchTar
)

// benchLayer builds a ~256 MiB layer once: 64 files of 2 MiB and 8192
// files of 16 KiB in 64 directories, plus a few symlinks.
func benchLayer(b *testing.B) []byte {
	benchOnce.Do(func() {
		rnd := rand.NewChaCha8([32]byte{1})
		block := make([]byte, 4<<20)
		rnd.Read(block)
		var buf bytes.Buffer
		buf.Grow(270 << 20)
		tw := tar.NewWriter(&buf)
		add := func(h *tar.Header, body []byte) {
			h.Mode, h.ModTime = 0o644, testTime
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
			h.Size = int64(len(body))
			if err := tw.WriteHeader(h); err != nil {
				b.Fatal(err)
			}
			tw.Write(body)
			benchBytes += int64(len(body))
		}
		add(&tar.Header{Name: "big/", Typeflag: tar.TypeDir}, nil)
		for i := range 64 {
			off := (i * 65536) % (2 << 20)
			add(&tar.Header{Name: "big/f" + strconv.Itoa(i), Typeflag: tar.TypeReg}, block[off:off+2<<20])
		}
		for d := range 64 {
			dir := "usr/share/d" + strconv.Itoa(d) + "/"
			add(&tar.Header{Name: dir, Typeflag: tar.TypeDir}, nil)
			for i := range 128 {
				off := (d*128 + i) * 512 % (4<<20 - 16<<10)
				add(&tar.Header{Name: dir + "f" + strconv.Itoa(i), Typeflag: tar.TypeReg}, block[off:off+16<<10])
			}
			add(&tar.Header{Name: dir + "link", Typeflag: tar.TypeSymlink, Linkname: "/big/f0"}, nil)
		}
		if err := tw.Close(); err != nil {
			b.Fatal(err)
		}
		benchTar = buf.Bytes()
	})
	return benchTar
}

// BenchmarkApply unpacks a generated ~256 MiB layer (uncompressed, gzip,
// zstd) into a fresh rootfs with the diffID checked. Throughput is of the
// uncompressed tar. UNPACK_BENCH_DIR picks the file system (default: the
// test temp dir).
func BenchmarkApply(b *testing.B) {
	raw := benchLayer(b)
	id := diffID(raw)
	for _, c := range []struct {
		name string
		mt   string
		comp func() []byte
	}{
		{"tar", spec.MediaTypeLayer, func() []byte { return raw }},
		{"gzip", spec.MediaTypeLayerGzip, func() []byte {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
			zw.Write(raw)
			zw.Close()
			return buf.Bytes()
		}},
		{"zstd", spec.MediaTypeLayerZstd, func() []byte {
			var buf bytes.Buffer
			zw, _ := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
			zw.Write(raw)
			zw.Close()
			return buf.Bytes()
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			blob := c.comp()
			l := Layer{MediaType: c.mt, DiffID: id, Open: func() (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(blob)), nil
			}}
			dir := b.TempDir()
			if d := os.Getenv("UNPACK_BENCH_DIR"); d != "" {
				// e.g. /dev/shm, to measure unpack cost without the disk
				var err error
				if dir, err = os.MkdirTemp(d, "unpack-bench-"); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(dir) })
			}
			b.SetBytes(int64(len(raw)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				dst := filepath.Join(dir, "rootfs"+strconv.Itoa(i))
				if err := Apply(context.Background(), dst, []Layer{l}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dst)
				b.StartTimer()
			}
		})
	}
}
