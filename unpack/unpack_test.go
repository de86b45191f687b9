package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestApplyBasicEntries(t *testing.T) {
	s := newSandbox(t)
	mt := time.Date(2019, 1, 2, 3, 4, 5, 0, time.UTC)
	l := mkTar(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755},
		ent{name: "etc/", typ: tar.TypeDir, mode: 0o750, mtime: mt},
		ent{name: "etc/hosts", body: "127.0.0.1 localhost\n", mode: 0o640, mtime: mt},
		ent{name: "bin/tool", body: "#!/bin/sh\n", mode: 0o4755}, // no dir entry: parent implied
		ent{name: "etc/abs", typ: tar.TypeSymlink, link: "/etc/hosts"},
		ent{name: "etc/rel", typ: tar.TypeSymlink, link: "../../../../etc/hosts"},
	)
	if err := apply(t, s, tarLayers(l)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := readFile(t, filepath.Join(s.rootfs, "etc/hosts")), "127.0.0.1 localhost\n"; got != want {
		t.Errorf("etc/hosts: got %q, want %q", got, want)
	}
	for _, c := range []struct {
		name string
		mode fs.FileMode
	}{
		{"etc", fs.ModeDir | 0o750},
		{"etc/hosts", 0o640},
		{"bin/tool", fs.ModeSetuid | 0o755},
		{"bin", fs.ModeDir | 0o755},
	} {
		fi, err := os.Lstat(filepath.Join(s.rootfs, c.name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode got %v, want %v", c.name, fi.Mode(), c.mode)
		}
	}
	for _, name := range []string{"etc", "etc/hosts"} {
		fi, err := os.Lstat(filepath.Join(s.rootfs, name))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(mt) {
			t.Errorf("%s: mtime got %v, want %v", name, fi.ModTime(), mt)
		}
	}
	for name, want := range map[string]string{"etc/abs": "/etc/hosts", "etc/rel": "../../../../etc/hosts"} {
		got, err := os.Readlink(filepath.Join(s.rootfs, name))
		if err != nil || got != want {
			t.Errorf("symlink %s: got %q, %v; want %q (created as-is)", name, got, err, want)
		}
		fi, _ := os.Lstat(filepath.Join(s.rootfs, name))
		if !fi.ModTime().Equal(testTime) {
			t.Errorf("symlink %s: mtime got %v, want %v", name, fi.ModTime(), testTime)
		}
	}
	s.checkOutside(t)
}

func TestWhiteouts(t *testing.T) {
	s := newSandbox(t)
	lower := mkTar(t,
		ent{name: "a/", typ: tar.TypeDir},
		ent{name: "a/x", body: "x"},
		ent{name: "a/y", body: "y"},
		ent{name: "b", body: "b"},
		ent{name: "c/", typ: tar.TypeDir},
		ent{name: "c/deep/z", body: "z"},
		ent{name: "link", typ: tar.TypeSymlink, link: "a"},
		ent{name: "same", body: "lower"},
	)
	upper := mkTar(t,
		ent{name: "a/.wh.x"},
		ent{name: ".wh.b"},
		ent{name: ".wh.c"},
		ent{name: ".wh.link"},          // removes the link, not a/
		ent{name: ".wh.never-existed"}, // harmless
		ent{name: "same", body: "upper"},
		ent{name: ".wh.same"}, // same-layer entry: a whiteout only hides lower layers
		ent{name: "c/new", body: "n"},
	)
	if err := apply(t, s, tarLayers(lower, upper)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := listDir(t, s.rootfs), []string{"a", "c", "same"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rootfs: got %v, want %v", got, want)
	}
	if got, want := listDir(t, filepath.Join(s.rootfs, "a")), []string{"y"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("a/: got %v, want %v", got, want)
	}
	if got, want := listDir(t, filepath.Join(s.rootfs, "c")), []string{"new"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("c/ (whited out, then recreated by a later entry): got %v, want %v", got, want)
	}
	if got := readFile(t, filepath.Join(s.rootfs, "same")); got != "upper" {
		t.Errorf("same: got %q, want %q", got, "upper")
	}
	for _, n := range []string{".wh.b", "a/.wh.x", ".wh.same"} {
		if exists(filepath.Join(s.rootfs, n)) {
			t.Errorf("whiteout file %s was created in the rootfs", n)
		}
	}
	s.checkOutside(t)
}

func TestOpaqueDir(t *testing.T) {
	s := newSandbox(t)
	lower := mkTar(t,
		ent{name: "o/", typ: tar.TypeDir},
		ent{name: "o/old", body: "old"},
		ent{name: "o/sub/gone", body: "g"},
		ent{name: "o/sub/kept-dir-lower", body: "l"},
		ent{name: "keep/file", body: "k"},
	)
	upper := mkTar(t,
		ent{name: "o/", typ: tar.TypeDir, mode: 0o711},
		ent{name: "o/before", body: "b"}, // same layer, before the marker: kept
		ent{name: "o/sub/", typ: tar.TypeDir},
		ent{name: "o/sub/c", body: "c"},
		ent{name: "o/.wh..wh..opq"},
		ent{name: "o/after", body: "a"},
	)
	if err := apply(t, s, tarLayers(lower, upper)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := listDir(t, filepath.Join(s.rootfs, "o")), []string{"after", "before", "sub"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("o/: got %v, want %v", got, want)
	}
	// o/sub itself was written by this layer, so it is kept with its lower content.
	if got, want := listDir(t, filepath.Join(s.rootfs, "o/sub")), []string{"c", "gone", "kept-dir-lower"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("o/sub/: got %v, want %v", got, want)
	}
	if got := readFile(t, filepath.Join(s.rootfs, "keep/file")); got != "k" {
		t.Errorf("keep/file: got %q, want %q", got, "k")
	}
	fi, err := os.Stat(filepath.Join(s.rootfs, "o"))
	if err != nil || fi.Mode().Perm() != 0o711 {
		t.Errorf("o/: got %v, %v; want mode 0711 from the upper layer", fi.Mode(), err)
	}
	if exists(filepath.Join(s.rootfs, "o/.wh..wh..opq")) {
		t.Error("opaque marker created in the rootfs")
	}
}

func TestOpaqueDirSameLayerDescendant(t *testing.T) {
	s := newSandbox(t)
	lower := mkTar(t,
		ent{name: "o/sub/gone", body: "g"},
		ent{name: "o/gone", body: "g"},
	)
	// o/sub/new is written without an entry for o/sub: the marker must
	// keep o/sub (a same-layer ancestor) but prune its lower content.
	upper := mkTar(t,
		ent{name: "o/sub/new", body: "n"},
		ent{name: "o/.wh..wh..opq"},
	)
	if err := apply(t, s, tarLayers(lower, upper)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := listDir(t, filepath.Join(s.rootfs, "o")), []string{"sub"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("o/: got %v, want %v", got, want)
	}
	if got, want := listDir(t, filepath.Join(s.rootfs, "o/sub")), []string{"new"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("o/sub/: got %v, want %v", got, want)
	}
}

func TestHardLinks(t *testing.T) {
	s := newSandbox(t)
	l := mkTar(t,
		ent{name: "f", body: "data"},
		ent{name: "dir/l1", typ: tar.TypeLink, link: "f"},
		ent{name: "l2", typ: tar.TypeLink, link: "/f"},
		ent{name: "l3", typ: tar.TypeLink, link: "./dir/../f"},
	)
	if err := apply(t, s, tarLayers(l)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	f, err := os.Stat(filepath.Join(s.rootfs, "f"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"dir/l1", "l2", "l3"} {
		fi, err := os.Lstat(filepath.Join(s.rootfs, n))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if !os.SameFile(f, fi) {
			t.Errorf("%s is not a hard link to f", n)
		}
	}
	if got, want := nlink(f), uint64(4); got != want {
		t.Errorf("f link count: got %d, want %d", got, want)
	}
	s.checkOutside(t)
}

func TestHardLinkRejected(t *testing.T) {
	for _, c := range []struct {
		name   string
		ents   []ent
		unsafe bool // error must wrap ErrUnsafePath
	}{
		{"dotdot", []ent{{name: "h", typ: tar.TypeLink, link: "../outside/secret"}}, true},
		{"dotdot deep", []ent{{name: "h", typ: tar.TypeLink, link: "a/../../outside/secret"}}, true},
		{"missing target", []ent{{name: "h", typ: tar.TypeLink, link: "nope"}}, false},
		{"directory target", []ent{{name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}}, true},
		{"rootfs target", []ent{{name: "h", typ: tar.TypeLink, link: "/"}}, true},
		// Through a symlink pointing outside: resolved inside the rootfs, where nothing is.
		{"via absolute symlink", []ent{
			{name: "s", typ: tar.TypeSymlink, link: "/OUTSIDE"},
			{name: "h", typ: tar.TypeLink, link: "s/secret"},
		}, false},
		{"via relative symlink", []ent{
			{name: "s", typ: tar.TypeSymlink, link: "../outside"},
			{name: "h", typ: tar.TypeLink, link: "s/secret"},
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			for i := range c.ents {
				c.ents[i].link = strings.ReplaceAll(c.ents[i].link, "/OUTSIDE", s.outside)
			}
			err := apply(t, s, tarLayers(mkTar(t, c.ents...)))
			if err == nil {
				t.Fatal("Apply succeeded, want an error")
			}
			if c.unsafe && !errors.Is(err, ErrUnsafePath) {
				t.Errorf("got %v, want an error wrapping ErrUnsafePath", err)
			}
			if !c.unsafe && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("got %v, want an error wrapping fs.ErrNotExist", err)
			}
			s.noRootfs(t)
		})
	}
}

func TestSymlinkEscape(t *testing.T) {
	for _, c := range []struct {
		name string
		ents []ent
		want string // where the written file must land, inside the rootfs
	}{
		{"symlink to / then write through it", []ent{
			{name: "evil", typ: tar.TypeSymlink, link: "/"},
			{name: "evil/pwned", body: "p"},
		}, "pwned"},
		{"absolute symlink to the outside dir", []ent{
			{name: "evil", typ: tar.TypeSymlink, link: "/OUTSIDE"},
			{name: "evil/pwned", body: "p"},
		}, "OUTSIDE/pwned"},
		{"relative symlink climbing out", []ent{
			{name: "d/evil", typ: tar.TypeSymlink, link: "../../../../../outside"},
			{name: "d/evil/pwned", body: "p"},
		}, "outside/pwned"},
		{"symlink chain", []ent{
			{name: "a", typ: tar.TypeSymlink, link: "b/../.."},
			{name: "b", typ: tar.TypeSymlink, link: "c"},
			{name: "c", typ: tar.TypeSymlink, link: "/../.."},
			{name: "a/outside/pwned", body: "p"},
		}, "outside/pwned"},
		{"symlink dir in a lower position replaced by file write", []ent{
			{name: "x", typ: tar.TypeSymlink, link: "/OUTSIDE/secret"},
			{name: "x", body: "p"}, // replaces the link, never writes its target
		}, "x"},
		{"hard link through symlinked dir stays inside", []ent{
			{name: "in/f", body: "p"},
			{name: "s", typ: tar.TypeSymlink, link: "/in"},
			{name: "h", typ: tar.TypeLink, link: "s/f"},
		}, "h"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			outsideRel := strings.TrimPrefix(s.outside, "/")
			for i := range c.ents {
				c.ents[i].link = strings.ReplaceAll(c.ents[i].link, "/OUTSIDE", s.outside)
			}
			// Split across two layers as well as within one.
			for _, split := range []bool{false, true} {
				_ = os.RemoveAll(s.rootfs)
				var layers []Layer
				if split {
					layers = tarLayers(mkTar(t, c.ents[:len(c.ents)-1]...), mkTar(t, c.ents[len(c.ents)-1]))
				} else {
					layers = tarLayers(mkTar(t, c.ents...))
				}
				if err := apply(t, s, layers); err != nil {
					t.Fatalf("Apply (split %v): %v", split, err)
				}
				want := strings.ReplaceAll(c.want, "OUTSIDE", outsideRel)
				if got := readFile(t, filepath.Join(s.rootfs, want)); got != "p" {
					t.Errorf("split %v: %s: got %q, want %q", split, want, got, "p")
				}
				s.checkOutside(t)
			}
		})
	}
}

func TestSymlinkLoop(t *testing.T) {
	s := newSandbox(t)
	l := mkTar(t,
		ent{name: "a", typ: tar.TypeSymlink, link: "b"},
		ent{name: "b", typ: tar.TypeSymlink, link: "a"},
		ent{name: "a/f", body: "x"},
	)
	err := apply(t, s, tarLayers(l))
	if !errors.Is(err, syscall.ELOOP) {
		t.Errorf("got %v, want ELOOP", err)
	}
	s.noRootfs(t)
}

func TestDotDotNames(t *testing.T) {
	for _, name := range []string{"../evil", "a/../../evil", "/../evil", "./../outside/secret", "..", "a/b/../../../x"} {
		t.Run(name, func(t *testing.T) {
			s := newSandbox(t)
			err := apply(t, s, tarLayers(mkTar(t, ent{name: "ok", body: "1"}, ent{name: name, body: "evil"})))
			if !errors.Is(err, ErrUnsafePath) || !errors.Is(err, spec.ErrIntegrity) {
				t.Errorf("got %v, want an error wrapping ErrUnsafePath and spec.ErrIntegrity", err)
			}
			s.noRootfs(t)
		})
	}
	t.Run("dotdot that stays inside", func(t *testing.T) {
		s := newSandbox(t)
		if err := apply(t, s, tarLayers(mkTar(t, ent{name: "a/../b", body: "1"}))); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got := readFile(t, filepath.Join(s.rootfs, "b")); got != "1" {
			t.Errorf("b: got %q, want %q", got, "1")
		}
	})
}

func TestAbsoluteNames(t *testing.T) {
	s := newSandbox(t)
	abs := filepath.Join(s.outside, "abs") // an absolute name naming a real host path
	l := mkTar(t,
		ent{name: "/etc/passwd", body: "root:x:0:0::/root:/bin/sh\n"},
		ent{name: abs, body: "inside"},
		ent{name: "//double//slash", body: "d"},
	)
	if err := apply(t, s, tarLayers(l)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for name, want := range map[string]string{
		"etc/passwd":   "root:x:0:0::/root:/bin/sh\n",
		abs:            "inside",
		"double/slash": "d",
	} {
		if got := readFile(t, filepath.Join(s.rootfs, name)); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if exists(abs) {
		t.Errorf("%s was written on the host", abs)
	}
	s.checkOutside(t)
}

func deviceEntries() []ent {
	return []ent{
		{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666},
		{name: "dev/loop9", typ: tar.TypeBlock, major: 7, minor: 9, mode: 0o660},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "after", body: "a"},
	}
}

func TestDeviceFilesUnprivileged(t *testing.T) {
	s := newSandbox(t)
	var logs logBuf
	err := apply(t, s, tarLayers(mkTar(t, deviceEntries()...)), withPrivileged(false), WithLogger(logs.logger()))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, n := range []string{"dev/null", "dev/loop9", "run/fifo"} {
		if exists(filepath.Join(s.rootfs, n)) {
			t.Errorf("%s created without privilege", n)
		}
		if !strings.Contains(logs.String(), "name="+n) {
			t.Errorf("no warning about skipping %s; log:\n%s", n, logs.String())
		}
	}
	if got := readFile(t, filepath.Join(s.rootfs, "after")); got != "a" {
		t.Errorf("after: got %q, want %q", got, "a")
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("want WARN records, log:\n%s", logs.String())
	}
}

func TestDeviceFilesRoot(t *testing.T) {
	testutil.RequireExternal(t, os.Geteuid() == 0, "needs root: device nodes are only created when running as root")
	s := newSandbox(t)
	var logs logBuf
	if err := apply(t, s, tarLayers(mkTar(t, deviceEntries()...)), WithLogger(logs.logger())); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	fi, err := os.Lstat(filepath.Join(s.rootfs, "run/fifo"))
	if err != nil {
		t.Fatalf("fifo: %v", err)
	}
	if fi.Mode() != fs.ModeNamedPipe|0o600 {
		t.Errorf("fifo mode: got %v, want %v", fi.Mode(), fs.ModeNamedPipe|0o600)
	}
	fi, err = os.Lstat(filepath.Join(s.rootfs, "dev/null"))
	if err != nil {
		// Root without CAP_MKNOD (an unprivileged container): skipped with a warning.
		if !strings.Contains(logs.String(), "name=dev/null") {
			t.Fatalf("dev/null neither created nor reported: %v; log:\n%s", err, logs.String())
		}
		t.Skipf("mknod of devices not permitted here: %s", logs.String())
	}
	if fi.Mode()&fs.ModeCharDevice == 0 || fi.Mode().Perm() != 0o666 {
		t.Errorf("dev/null mode: got %v, want a 0666 char device", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); uint64(st.Rdev) != 1<<8|3 {
		t.Errorf("dev/null rdev: got %#x, want 0x103", st.Rdev)
	}
	fi, err = os.Lstat(filepath.Join(s.rootfs, "dev/loop9"))
	if err != nil || fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		t.Errorf("dev/loop9: got %v, %v; want a block device", fi.Mode(), err)
	}
}

func TestOwnershipRoot(t *testing.T) {
	testutil.RequireExternal(t, os.Geteuid() == 0, "needs root to chown")
	s := newSandbox(t)
	l := mkTar(t,
		ent{name: "d/", typ: tar.TypeDir, uid: 1001, gid: 1002},
		ent{name: "d/f", body: "x", uid: 1234, gid: 5678, mode: 0o6755},
		ent{name: "d/l", typ: tar.TypeSymlink, link: "/nowhere", uid: 42, gid: 43},
		ent{name: "d/cap", body: "c", pax: map[string]string{"SCHILY.xattr.user.coffer": "v"}},
	)
	if err := apply(t, s, tarLayers(l)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, c := range []struct {
		name     string
		uid, gid uint32
	}{{"d", 1001, 1002}, {"d/f", 1234, 5678}, {"d/l", 42, 43}} {
		fi, err := os.Lstat(filepath.Join(s.rootfs, c.name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: owner got %d:%d, want %d:%d", c.name, st.Uid, st.Gid, c.uid, c.gid)
		}
	}
	fi, _ := os.Lstat(filepath.Join(s.rootfs, "d/f"))
	if want := fs.ModeSetuid | fs.ModeSetgid | 0o755; fi.Mode() != want {
		t.Errorf("d/f mode after chown: got %v, want %v", fi.Mode(), want)
	}
	// Without same-owner, files belong to the caller.
	s2 := newSandbox(t)
	if err := apply(t, s2, tarLayers(l), WithSameOwner(false)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	fi, _ = os.Lstat(filepath.Join(s2.rootfs, "d/f"))
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Errorf("WithSameOwner(false): d/f uid got %d, want 0", st.Uid)
	}
}

func TestXattrs(t *testing.T) {
	s := newSandbox(t)
	l := mkTar(t,
		ent{name: "f", body: "x", pax: map[string]string{"SCHILY.xattr.user.coffer": "value"}},
		ent{name: "d/", typ: tar.TypeDir, pax: map[string]string{"SCHILY.xattr.user.dir": "dv"}},
	)
	if err := apply(t, s, tarLayers(l)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for name, kv := range map[string][2]string{"f": {"user.coffer", "value"}, "d": {"user.dir", "dv"}} {
		got, err := getxattr(filepath.Join(s.rootfs, name), kv[0])
		if errors.Is(err, syscall.ENOTSUP) {
			t.Skipf("file system without user xattrs: %v", err)
		}
		if err != nil || got != kv[1] {
			t.Errorf("%s xattr %s: got %q, %v; want %q", name, kv[0], got, err, kv[1])
		}
	}
}

func TestReplaceEntries(t *testing.T) {
	s := newSandbox(t)
	lower := mkTar(t,
		ent{name: "dir-to-file/", typ: tar.TypeDir},
		ent{name: "dir-to-file/child", body: "c"},
		ent{name: "file-to-dir", body: "f"},
		ent{name: "file-to-link", body: "f"},
		ent{name: "merge/", typ: tar.TypeDir, mode: 0o700},
		ent{name: "merge/lower", body: "l"},
	)
	upper := mkTar(t,
		ent{name: "dir-to-file", body: "now a file"},
		ent{name: "file-to-dir/", typ: tar.TypeDir},
		ent{name: "file-to-dir/x", body: "x"},
		ent{name: "file-to-link", typ: tar.TypeSymlink, link: "dir-to-file"},
		ent{name: "merge/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "merge/upper", body: "u"},
	)
	if err := apply(t, s, tarLayers(lower, upper)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := readFile(t, filepath.Join(s.rootfs, "dir-to-file")); got != "now a file" {
		t.Errorf("dir-to-file: got %q", got)
	}
	if got := readFile(t, filepath.Join(s.rootfs, "file-to-dir/x")); got != "x" {
		t.Errorf("file-to-dir/x: got %q", got)
	}
	if got, _ := os.Readlink(filepath.Join(s.rootfs, "file-to-link")); got != "dir-to-file" {
		t.Errorf("file-to-link: got %q, want a symlink to dir-to-file", got)
	}
	if got, want := listDir(t, filepath.Join(s.rootfs, "merge")), []string{"lower", "upper"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("merge/: got %v, want %v", got, want)
	}
}

func TestDiffIDMismatch(t *testing.T) {
	s := newSandbox(t)
	good := mkTar(t, ent{name: "a", body: "a"})
	bad := mkTar(t, ent{name: "b", body: "b"})
	layers := []Layer{
		layerOf(spec.MediaTypeLayer, good, diffID(good)),
		layerOf(spec.MediaTypeLayer, bad, diffID(good)), // wrong diffID
	}
	err := apply(t, s, layers)
	if !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("got %v, want an error wrapping spec.ErrIntegrity", err)
	}
	if !strings.Contains(err.Error(), "layer 1") {
		t.Errorf("error %q does not name the layer", err)
	}
	s.noRootfs(t)
}

// TestDiffIDCoversTrailingBytes: bytes after the tar end marker are part
// of the diffID, so Apply must read them before it commits.
func TestDiffIDCoversTrailingBytes(t *testing.T) {
	s := newSandbox(t)
	b := mkTar(t, ent{name: "a", body: "a"})
	want := diffID(b)
	padded := append(append([]byte{}, b...), make([]byte, 4096)...)
	padded[len(padded)-1] = 1
	err := apply(t, s, []Layer{layerOf(spec.MediaTypeLayer, padded, want)})
	if !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("got %v, want an error wrapping spec.ErrIntegrity", err)
	}
	s.noRootfs(t)
}

func gzipped(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCompressedLayers(t *testing.T) {
	big := strings.Repeat("compressible data ", 100000)
	for _, c := range []struct {
		name string
		mt   string
		comp func(testing.TB, []byte) []byte
	}{
		{"gzip", spec.MediaTypeLayerGzip, gzipped},
		{"docker gzip", spec.MediaTypeDockerLayer, gzipped},
		{"zstd", spec.MediaTypeLayerZstd, zstded},
		{"plain", spec.MediaTypeLayer, func(_ testing.TB, b []byte) []byte { return b }},
		{"mislabelled gzip as tar", spec.MediaTypeLayer, gzipped},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			raw := mkTar(t, ent{name: "big", body: big}, ent{name: "small", body: c.name})
			blob := c.comp(t, raw)
			if err := apply(t, s, []Layer{layerOf(c.mt, blob, diffID(raw))}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := readFile(t, filepath.Join(s.rootfs, "big")); got != big {
				t.Errorf("big: got %d bytes, want %d", len(got), len(big))
			}
			if got := readFile(t, filepath.Join(s.rootfs, "small")); got != c.name {
				t.Errorf("small: got %q, want %q", got, c.name)
			}
			// The diffID is over the uncompressed tar, not the blob.
			s2 := newSandbox(t)
			if c.name != "plain" {
				err := apply(t, s2, []Layer{layerOf(c.mt, blob, diffID(blob))})
				if !errors.Is(err, spec.ErrIntegrity) {
					t.Errorf("diffID of the compressed blob: got %v, want ErrIntegrity", err)
				}
				s2.noRootfs(t)
			}
		})
	}
}

func TestUnsupportedMediaTypes(t *testing.T) {
	raw := mkTar(t, ent{name: "a", body: "a"})
	for _, mt := range []string{spec.MediaTypeLayerGzip + spec.EncryptedSuffix, "application/octet-stream", spec.MediaTypeLayer + "+bzip2"} {
		s := newSandbox(t)
		err := apply(t, s, []Layer{layerOf(mt, raw, v1.Hash{})})
		if !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", mt, err)
		}
		s.noRootfs(t)
	}
	_, err := Decompress(spec.MediaTypeLayer, bytes.NewReader(raw), v1.Hash{Algorithm: "sha512", Hex: "00"})
	if !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("sha512 diffID: got %v, want ErrUnsupported", err)
	}
}

func TestTruncatedTar(t *testing.T) {
	raw := mkTar(t, ent{name: "a", body: "a"}, ent{name: "big", body: strings.Repeat("x", 100000)})
	for _, c := range []struct {
		name string
		blob []byte
		mt   string
	}{
		{"tar mid-file", raw[:len(raw)/2], spec.MediaTypeLayer},
		{"tar mid-header", raw[:512+512+100], spec.MediaTypeLayer},
		{"gzip", func() []byte { g := gzipped(t, raw); return g[:len(g)-10] }(), spec.MediaTypeLayerGzip},
		{"zstd", func() []byte { z := zstded(t, raw); return z[:len(z)/2] }(), spec.MediaTypeLayerZstd},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			// No diffID: the truncation itself must be reported.
			err := apply(t, s, []Layer{layerOf(c.mt, c.blob, v1.Hash{})})
			if err == nil {
				t.Fatal("Apply of a truncated layer succeeded")
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Logf("error (not ErrUnexpectedEOF, still a failure): %v", err)
			}
			s.noRootfs(t)
		})
	}
}

// cancelReader cancels the context once n bytes have been read.
type cancelReader struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestContextCancellation(t *testing.T) {
	raw := mkTar(t, ent{name: "a", body: strings.Repeat("a", 4<<20)}, ent{name: "b", body: "b"})
	t.Run("before", func(t *testing.T) {
		s := newSandbox(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := Apply(ctx, s.rootfs, tarLayers(raw))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
		s.noRootfs(t)
	})
	t.Run("during", func(t *testing.T) {
		s := newSandbox(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		l := Layer{MediaType: spec.MediaTypeLayer, Open: func() (io.ReadCloser, error) {
			return io.NopCloser(&cancelReader{r: bytes.NewReader(raw), n: 1 << 20, cancel: cancel}), nil
		}}
		err := Apply(ctx, s.rootfs, []Layer{l})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
		s.noRootfs(t)
	})
}

func TestApplyDestinationExists(t *testing.T) {
	s := newSandbox(t)
	if err := os.Mkdir(s.rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	err := apply(t, s, tarLayers(mkTar(t, ent{name: "a", body: "a"})))
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("got %v, want fs.ErrExist", err)
	}
	if got := listDir(t, s.rootfs); len(got) != 0 {
		t.Errorf("existing destination was written: %v", got)
	}
}

func TestOpenError(t *testing.T) {
	s := newSandbox(t)
	boom := errors.New("blob gone")
	err := apply(t, s, []Layer{{MediaType: spec.MediaTypeLayer, Open: func() (io.ReadCloser, error) { return nil, boom }}})
	if !errors.Is(err, boom) {
		t.Errorf("got %v, want the Open error", err)
	}
	s.noRootfs(t)
}

func TestApplyLayerOntoExisting(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old"), []byte("o"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ApplyLayer(context.Background(), dir, bytes.NewReader(mkTar(t, ent{name: ".wh.old"}, ent{name: "new", body: "n"}))); err != nil {
		t.Fatalf("ApplyLayer: %v", err)
	}
	if got, want := listDir(t, dir), []string{"new"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rootfs.config.json")
	cfg := &v1.ConfigFile{Architecture: "amd64", OS: "linux", Config: v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"A=B"}}}
	if err := WriteConfig(p, cfg); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode: got %v, want 0644", fi.Mode().Perm())
	}
	f, _ := os.Open(p)
	defer f.Close()
	got, err := v1.ParseConfigFile(f)
	if err != nil {
		t.Fatalf("parsing written config: %v", err)
	}
	if got.OS != "linux" || got.Architecture != "amd64" || len(got.Config.Cmd) != 1 || got.Config.Cmd[0] != "/bin/sh" || got.Config.Env[0] != "A=B" {
		t.Errorf("round trip: got %+v", got)
	}
	if names := listDir(t, dir); len(names) != 1 {
		t.Errorf("temp files left: %v", names)
	}
	// Overwrites atomically.
	cfg.OS = "freebsd"
	if err := WriteConfig(p, cfg); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, p); !strings.Contains(b, "freebsd") {
		t.Errorf("second write not visible: %s", b)
	}
	if err := WriteConfig(filepath.Join(dir, "missing", "c.json"), cfg); err == nil {
		t.Error("WriteConfig into a missing directory succeeded")
	}
	if err := WriteConfig(p, nil); err == nil {
		t.Error("WriteConfig(nil) succeeded")
	}
}

// rawHeader encodes a ustar header block by hand (archive/tar will not
// write GNU sparse PAX records).
func rawHeader(name string, typ byte, size int) []byte {
	h := make([]byte, 512)
	copy(h[0:], name)
	copy(h[100:], fmt.Sprintf("%07o\x00", 0o644))
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], fmt.Sprintf("%011o\x00", testTime.Unix()))
	h[156] = typ
	copy(h[257:], "ustar\x0000")
	copy(h[148:], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// sparseTar builds a PAX GNU sparse 1.0 entry: a 64 MiB file holding
// "data" at offset 32 MiB and holes elsewhere.
func sparseTar() []byte {
	var recs string
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", "sparse"}, {"GNU.sparse.realsize", "67108864"}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 2
		if len(fmt.Sprint(n+len(rec))) > 2 {
			n++
		}
		recs += fmt.Sprintf("%d%s", n, rec)
	}
	payload := append(pad512([]byte("1\n33554432\n4\n")), "data"...)
	var b []byte
	b = append(b, rawHeader("PaxHeaders/sparse", 'x', len(recs))...)
	b = append(b, pad512([]byte(recs))...)
	b = append(b, rawHeader("GNUSparseFile.0/sparse", '0', len(payload))...)
	b = append(b, pad512(payload)...)
	return append(b, make([]byte, 1024)...)
}

func TestSparseFile(t *testing.T) {
	s := newSandbox(t)
	if err := apply(t, s, tarLayers(sparseTar())); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	p := filepath.Join(s.rootfs, "sparse")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 64<<20 {
		t.Errorf("size: got %d, want %d", fi.Size(), 64<<20)
	}
	f, _ := os.Open(p)
	defer f.Close()
	got := make([]byte, 4)
	f.ReadAt(got, 32<<20)
	if string(got) != "data" {
		t.Errorf("data at 32 MiB: got %q, want %q", got, "data")
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 8<<20 {
		t.Errorf("sparse file uses %d bytes on disk, want holes kept", blocks*512)
	}
}

func TestDecompress(t *testing.T) {
	raw := bytes.Repeat([]byte("0123456789abcdef"), 300000) // ~4.6 MiB: several pipeline chunks
	for _, c := range []struct {
		name string
		blob []byte
	}{{"plain", raw}, {"gzip", gzipped(t, raw)}, {"zstd", zstded(t, raw)}} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decompress("", bytes.NewReader(c.blob), diffID(raw))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, raw) {
				t.Errorf("got %d bytes, %v; want %d bytes, nil", len(got), err, len(raw))
			}
			r, _ = Decompress("", bytes.NewReader(c.blob), diffID(c.blob[:10]))
			got, err = io.ReadAll(r)
			r.Close()
			if !errors.Is(err, spec.ErrIntegrity) || len(got) != len(raw) {
				t.Errorf("wrong diffID: got %d bytes, %v; want all bytes then ErrIntegrity", len(got), err)
			}
			// Closing early stops the goroutine and later reads fail.
			r, _ = Decompress("", bytes.NewReader(c.blob), v1.Hash{})
			buf := make([]byte, 10)
			if _, err := r.Read(buf); err != nil {
				t.Fatal(err)
			}
			r.Close()
			if _, err := io.ReadAll(r); !errors.Is(err, os.ErrClosed) {
				t.Errorf("read after Close: got %v, want os.ErrClosed", err)
			}
		})
	}
}

// TestDirReplacedBySymlink: once a directory has been seen, replacing it
// with a symlink later in the same layer must redirect later entries
// (the directory cache is invalidated), and never out of the rootfs.
func TestDirReplacedBySymlink(t *testing.T) {
	s := newSandbox(t)
	lower := mkTar(t, ent{name: "d/", typ: tar.TypeDir}, ent{name: "e/", typ: tar.TypeDir})
	upper := mkTar(t,
		ent{name: "d/pre", body: "1"},
		ent{name: "d", typ: tar.TypeSymlink, link: "/e"},
		ent{name: "d/x", body: "2"},
		ent{name: "e", typ: tar.TypeSymlink, link: "../outside"},
		ent{name: "d/y", body: "3"}, // d -> /e -> ../outside: lands in rootfs/outside
	)
	if err := apply(t, s, tarLayers(lower, upper)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, _ := os.Readlink(filepath.Join(s.rootfs, "d")); got != "/e" {
		t.Errorf("d: got link %q, want /e", got)
	}
	if exists(filepath.Join(s.rootfs, "d/pre")) || exists(filepath.Join(s.rootfs, "e/pre")) {
		t.Error("d/pre survived the replacement of d")
	}
	if got := readFile(t, filepath.Join(s.rootfs, "outside/y")); got != "3" {
		t.Errorf("outside/y inside the rootfs: got %q, want %q", got, "3")
	}
	// e/x was written while e was a directory, then e became a symlink.
	if exists(filepath.Join(s.rootfs, "e/x")) {
		t.Error("e is a symlink now, e/x should be gone with the directory")
	}
	s.checkOutside(t)
}

// TestReadOnlyDirsUnprivileged: an unprivileged unpack keeps read-only
// directories writable until the end (so later layers can add to them),
// then gives them their recorded modes.
func TestReadOnlyDirsUnprivileged(t *testing.T) {
	s := newSandbox(t)
	lower := mkTar(t, ent{name: "ro/", typ: tar.TypeDir, mode: 0o555}, ent{name: "ro/sub/", typ: tar.TypeDir, mode: 0o500})
	upper := mkTar(t, ent{name: "ro/sub/f", body: "f"}, ent{name: "ro/g", body: "g"})
	if err := apply(t, s, tarLayers(lower, upper), withPrivileged(false), WithSameOwner(false)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for name, want := range map[string]fs.FileMode{"ro": 0o555, "ro/sub": 0o500} {
		fi, err := os.Stat(filepath.Join(s.rootfs, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: got %v, %v; want mode %v", name, fi.Mode().Perm(), err, want)
		}
	}
	if got := readFile(t, filepath.Join(s.rootfs, "ro/sub/f")); got != "f" {
		t.Errorf("ro/sub/f: got %q", got)
	}
}
