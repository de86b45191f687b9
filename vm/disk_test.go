package vm

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
)

// A scratch disk needs its key, a sane size and a path QEMU can take;
// the image is created sparse at the size asked and reused as it is.
func TestScratchDiskOptions(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "scratch.img")
	for _, c := range []struct {
		opts []Option
		want string
	}{
		{[]Option{WithScratchDisk(img, 10)}, "want 64 to"},
		{[]Option{WithScratchDisk("a,b", 0)}, "comma"},
		{[]Option{WithScratchDisk(img, 0), WithScratchKey("a/b")}, "scratch disk key"},
	} {
		o := &options{}
		var err error
		for _, f := range c.opts {
			if err = f(o); err != nil {
				break
			}
		}
		if !strings.Contains(fmtErr(err), c.want) {
			t.Errorf("%v, want an error containing %q", err, c.want)
		}
	}
	o := &options{}
	WithScratchDisk(img, 128)(o)
	if err := o.checkDisk(); !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "--scratch-key-id") {
		t.Errorf("a disk without a key: %v", err)
	}
	WithScratchKey("default/disk/scratch")(o)
	if err := o.checkDisk(); err != nil {
		t.Fatal(err)
	}
	if sc := o.scratchConfig(); sc.KeyID != "kbs:///default/disk/scratch" || sc.Serial != "coffer-scratch" {
		t.Errorf("guest config %+v", sc)
	}
	args, err := o.diskArgs()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != 128<<20 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("disk image: %v %v", fi, err)
	}
	if got := strings.Join(args, " "); !strings.Contains(got, "file="+img+",format=raw") || !strings.Contains(got, "virtio-blk-pci,drive=scratch,serial=coffer-scratch") {
		t.Errorf("qemu args %s", got)
	}
	os.Truncate(img, 64<<20) // an existing image is used as it is
	if _, err := o.diskArgs(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(img); fi.Size() != 64<<20 {
		t.Errorf("an existing image was resized to %d", fi.Size())
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// The scratch initramfs of the real Debian kernel holds dm-crypt, xts,
// ext4 and their dependencies in order, and cryptsetup and mke2fs with
// every library they need: extracted, they run in a chroot of the
// archive alone (when the test runs as root).
func TestScratchInitramfs(t *testing.T) {
	d := os.Getenv("COFFER_VM_KERNEL_DIR")
	if d == "" {
		cache, _ := os.UserCacheDir()
		d = filepath.Join(cache, "coffer-tools", "linux-image")
	}
	k, err := FindKernel(d)
	testutil.RequireExternal(t, err == nil, "no extracted linux-image package at "+d+" (set COFFER_VM_KERNEL_DIR, or run .ci/run)")
	testutil.RequireTool(t, "cryptsetup")
	testutil.RequireTool(t, "mke2fs")
	init := filepath.Join(t.TempDir(), "coffer")
	os.WriteFile(init, []byte("#!coffer"), 0o755)
	o := &options{}
	WithScratchDisk(filepath.Join(t.TempDir(), "d"), 0)(o)
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, init, k, o.initramfsExtras()...); err != nil {
		t.Fatal(err)
	}
	t.Logf("scratch initramfs: %d bytes compressed", buf.Len())
	zr, _ := gzip.NewReader(bytes.NewReader(buf.Bytes()))
	raw, _ := io.ReadAll(zr)
	files := parseNewc(t, raw)
	load := strings.Fields(string(files["lib/modules/load"]))
	pos := map[string]int{}
	for i, p := range load {
		pos[strings.TrimSuffix(filepath.Base(p), ".ko")] = i + 1
	}
	for _, dep := range [][2]string{{"dm_mod", "dm_crypt"}, {"jbd2", "ext4"}, {"mbcache", "ext4"}, {"crc16", "ext4"}, {"af_alg", "algif_skcipher"}, {"virtio", "virtio_blk"}} {
		if pos[dep[0]] == 0 || pos[dep[1]] == 0 || pos[dep[0]] >= pos[dep[1]] {
			t.Errorf("%s (at %d) must load before %s (at %d): %v", dep[0], pos[dep[0]], dep[1], pos[dep[1]], load)
		}
	}
	for _, f := range []string{"usr/sbin/cryptsetup", "usr/sbin/mke2fs", "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libcryptsetup.so.12", "lib/x86_64-linux-gnu/libext2fs.so.2"} {
		if len(files[f]) == 0 {
			t.Errorf("%s is not in the archive", f)
		}
	}
	if os.Getuid() != 0 {
		t.Log("not root: the tools are not run in a chroot of the archive")
		return
	}
	root := t.TempDir()
	x := exec.Command(testutil.RequireTool(t, "cpio"), "-id", "--quiet", "--no-absolute-filenames")
	x.Dir, x.Stdin = root, bytes.NewReader(raw)
	if out, err := x.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v %s", err, out)
	}
	for _, c := range [][]string{{"/usr/sbin/cryptsetup", "--version"}, {"/usr/sbin/mkfs.ext4", "-V"}} {
		out, err := exec.Command("chroot", append([]string{root}, c...)...).CombinedOutput()
		if err != nil {
			t.Errorf("%v in a chroot of the initramfs: %v\n%s", c, err, out)
		} else {
			t.Logf("%s", bytes.TrimSpace(out))
		}
	}
}
