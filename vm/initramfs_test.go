package vm

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// fakeModule writes a minimal ELF relocatable with a .modinfo section.
func fakeModule(t *testing.T, path, depends string) {
	t.Helper()
	info := []byte("license=GPL\x00depends=" + depends + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	var b bytes.Buffer
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(info)
	shOff := strOff + len(shstr)
	hdr := make([]byte, ehsize)
	copy(hdr, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(hdr[16:], 1)  // ET_REL
	binary.LittleEndian.PutUint16(hdr[18:], 62) // x86-64
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	binary.LittleEndian.PutUint64(hdr[40:], uint64(shOff))
	binary.LittleEndian.PutUint16(hdr[52:], ehsize)
	binary.LittleEndian.PutUint16(hdr[58:], shentsize)
	binary.LittleEndian.PutUint16(hdr[60:], 3)
	binary.LittleEndian.PutUint16(hdr[62:], 2)
	b.Write(hdr)
	b.Write(info)
	b.Write(shstr)
	sh := func(name, typ uint32, off, size int) {
		s := make([]byte, shentsize)
		binary.LittleEndian.PutUint32(s[0:], name)
		binary.LittleEndian.PutUint32(s[4:], typ)
		binary.LittleEndian.PutUint64(s[24:], uint64(off))
		binary.LittleEndian.PutUint64(s[32:], uint64(size))
		b.Write(s)
	}
	sh(0, 0, 0, 0)
	sh(1, 1, infoOff, len(info))  // .modinfo, PROGBITS
	sh(10, 3, strOff, len(shstr)) // .shstrtab, STRTAB
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeKernel(t *testing.T) *Kernel {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.WriteFile(filepath.Join(dir, "boot", "vmlinuz-6.1.0-9-amd64"), []byte("kernel"), 0o644)
	mods := filepath.Join(dir, "lib", "modules", "6.1.0-9-amd64", "kernel")
	fakeModule(t, filepath.Join(mods, "drivers/firmware/qemu_fw_cfg.ko"), "")
	fakeModule(t, filepath.Join(mods, "drivers/virtio/virtio_ring.ko"), "")
	fakeModule(t, filepath.Join(mods, "drivers/virtio/virtio.ko"), "virtio_ring")
	fakeModule(t, filepath.Join(mods, "drivers/virtio/virtio_pci_modern_dev.ko"), "")
	fakeModule(t, filepath.Join(mods, "drivers/virtio/virtio_pci_legacy_dev.ko"), "")
	fakeModule(t, filepath.Join(mods, "drivers/virtio/virtio_pci.ko"), "virtio_pci_modern_dev,virtio_ring,virtio,virtio_pci_legacy_dev")
	fakeModule(t, filepath.Join(mods, "net/core/failover.ko"), "")
	fakeModule(t, filepath.Join(mods, "drivers/net/net_failover.ko"), "failover")
	fakeModule(t, filepath.Join(mods, "drivers/net/virtio_net.ko"), "net_failover,virtio,virtio_ring")
	fakeModule(t, filepath.Join(mods, "drivers/char/virtio_console.ko"), "virtio,virtio_ring")
	k, err := FindKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The initramfs holds /init, the modules in dependency order and the
// load list, nothing else, and the same inputs give the same bytes.
// Debian's cpio is the oracle of the format when it is installed.
func TestInitramfs(t *testing.T) {
	k := fakeKernel(t)
	init := filepath.Join(t.TempDir(), "coffer")
	os.WriteFile(init, []byte("#!coffer"), 0o755)
	var a, b bytes.Buffer
	if err := WriteInitramfs(&a, init, k); err != nil {
		t.Fatal(err)
	}
	WriteInitramfs(&b, init, k)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two builds differ: the initramfs is not reproducible")
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	files := parseNewc(t, raw)
	if string(files["init"]) != "#!coffer" {
		t.Fatalf("init = %q", files["init"])
	}
	load := strings.Fields(string(files["lib/modules/load"]))
	pos := map[string]int{}
	for i, p := range load {
		pos[strings.TrimSuffix(filepath.Base(p), ".ko")] = i
		if _, ok := files[strings.TrimPrefix(p, "/")]; !ok {
			t.Errorf("load list names %s, not in the archive", p)
		}
	}
	for _, dep := range [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_pci"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}, {"virtio_pci_legacy_dev", "virtio_pci"}, {"virtio", "virtio_console"}} {
		if pos[dep[0]] >= pos[dep[1]] {
			t.Errorf("%s loads at %d, after %s at %d: %v", dep[0], pos[dep[0]], dep[1], pos[dep[1]], load)
		}
	}
	if len(load) != 10 {
		t.Errorf("load list %v, want the 10 modules", load)
	}
	t.Run("cpio reads it", func(t *testing.T) {
		cmd := exec.Command(testutil.RequireTool(t, "cpio"), "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), "lib/modules/virtio_net.ko") || !strings.Contains(string(out), "dev/console") {
			t.Fatalf("cpio -t: %v\n%s", err, out)
		}
	})
}

// parseNewc reads a newc archive's regular files (test oracle).
func parseNewc(t *testing.T, b []byte) map[string][]byte {
	files := map[string][]byte{}
	for len(b) >= 110 {
		if string(b[:6]) != "070701" {
			t.Fatalf("bad magic %q", b[:6])
		}
		field := func(i int) int {
			n, _ := strconv.ParseUint(string(b[6+8*i:14+8*i]), 16, 32)
			return int(n)
		}
		mode, size, nameSize := field(1), field(6), field(11)
		name := string(b[110 : 110+nameSize-1])
		off := (110 + nameSize + 3) &^ 3
		if name == "TRAILER!!!" {
			return files
		}
		if mode&0o170000 == 0o100000 {
			files[name] = b[off : off+size]
		}
		b = b[(off+size+3)&^3:]
	}
	t.Fatal("no trailer")
	return nil
}

func TestFindKernel(t *testing.T) {
	if _, err := FindKernel(t.TempDir()); err == nil || !strings.Contains(err.Error(), "dpkg -x") {
		t.Fatalf("empty dir: %v", err)
	}
}
