package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/spec"
)

// ent is one tar entry for a generated layer.
type ent struct {
	name     string
	typ      byte // 0 means regular file
	body     string
	link     string
	mode     int64
	uid, gid int
	major    int64
	minor    int64
	mtime    time.Time
	pax      map[string]string
}

var testTime = time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: e.mtime, PAXRecords: e.pax, Format: tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.ModTime.IsZero() {
			h.ModTime = testTime
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func diffID(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func layerOf(mt string, blob []byte, id v1.Hash) Layer {
	return Layer{MediaType: mt, DiffID: id, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}}
}

// tarLayers makes uncompressed layers with correct diffIDs.
func tarLayers(tars ...[]byte) []Layer {
	ls := make([]Layer, len(tars))
	for i, b := range tars {
		ls[i] = layerOf(spec.MediaTypeLayer, b, diffID(b))
	}
	return ls
}

// sandbox is a directory holding the rootfs-to-be and an "outside"
// directory with one file, so tests can check nothing escaped.
type sandbox struct {
	base, rootfs, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	base := t.TempDir()
	s := sandbox{base: base, rootfs: filepath.Join(base, "rootfs"), outside: filepath.Join(base, "outside")}
	// Read-only directories in the rootfs would stop an unprivileged
	// TempDir cleanup; this runs first.
	t.Cleanup(func() { removeAll(s.rootfs) })
	if err := os.Mkdir(s.outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.outside, "secret"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkOutside fails unless base holds only the rootfs (if any) and the
// untouched outside directory.
func (s sandbox) checkOutside(t testing.TB) {
	t.Helper()
	var got []string
	err := filepath.WalkDir(s.base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.base, p)
		got = append(got, rel)
		if rel == "rootfs" && d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", "outside", "outside/secret"}
	if _, err := os.Lstat(s.rootfs); err == nil {
		want = []string{".", "outside", "outside/secret", "rootfs"}
	}
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("entries outside the rootfs: got %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(s.outside, "secret"))
	if err != nil || string(b) != "outside" {
		t.Errorf("outside/secret: got %q, %v; want it untouched", b, err)
	}
	fi, err := os.Stat(filepath.Join(s.outside, "secret"))
	if err == nil && fi.Sys() != nil {
		if n := nlink(fi); n != 1 {
			t.Errorf("outside/secret has %d links, want 1", n)
		}
	}
}

// noRootfs asserts that a failed Apply left neither dst nor its staging
// directory behind.
func (s sandbox) noRootfs(t testing.TB) {
	t.Helper()
	if _, err := os.Lstat(s.rootfs); !os.IsNotExist(err) {
		t.Errorf("rootfs exists after a failed Apply (Lstat: %v)", err)
	}
	s.checkOutside(t)
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// logBuf is a slog handler target safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// withPrivileged overrides whether device nodes may be created.
func withPrivileged(b bool) Option {
	return func(o *options) error { o.privileged = b; return nil }
}

func apply(t testing.TB, s sandbox, layers []Layer, opts ...Option) error {
	t.Helper()
	return Apply(context.Background(), s.rootfs, layers, opts...)
}

func nlink(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 0
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
