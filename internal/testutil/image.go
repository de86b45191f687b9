package testutil

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// TarLayer builds an OCI layer holding files (path → content, mode 0755)
// compressed with comp ("gzip", "zstd" or "" for an uncompressed tar).
func TarLayer(t testing.TB, files map[string][]byte, comp string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	mtime := time.Unix(1700000000, 0)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	if comp == "" {
		// The blob is the tar itself (its digest is its diffID).
		return static.NewLayer(raw, types.OCIUncompressedLayer)
	}
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	opts := []tarball.LayerOption{tarball.WithMediaType(types.OCILayer)}
	switch comp {
	case "gzip":
	case "zstd":
		opts = []tarball.LayerOption{tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd)}
	default:
		t.Fatalf("TarLayer: unknown compression %q", comp)
	}
	l, err := tarball.LayerFromOpener(opener, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// BusyboxImage is a runnable OCI image: Debian's static busybox at
// /bin/busybox in its first (gzip) layer, then one layer per entry of extra
// (each a file set with its compression). It skips or fails (under
// COFFER_REQUIRE_EXTERNAL=1) when busybox-static is not installed.
func BusyboxImage(t testing.TB, extra ...Layer) v1.Image {
	t.Helper()
	bb, err := os.ReadFile(BusyboxPath)
	RequireExternal(t, err == nil, "busybox-static is not installed ("+BusyboxPath+"): apt-get install busybox-static")
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Cmd = []string{"/bin/busybox", "sh"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	layers := []v1.Layer{TarLayer(t, map[string][]byte{"bin/busybox": bb}, "gzip")}
	for _, l := range extra {
		layers = append(layers, TarLayer(t, l.Files, l.Compression))
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		t.Fatal(err)
	}
	return img
}

// Layer is one extra layer of BusyboxImage.
type Layer struct {
	Files       map[string][]byte
	Compression string // "gzip", "zstd" or ""
}
