package vm

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

// GuestModules are the kernel modules the guest loads, by name; their
// dependencies (read from each module's .modinfo) are added and ordered
// before them. Debian's 6.1 kernel builds the TPM, serial console and
// securityfs in; fw_cfg (how the host hands over init-data and the run
// configuration), virtio-net and virtio_console (the agent mode's
// virtio-serial port) are modules.
var GuestModules = []string{"qemu_fw_cfg", "virtio_pci", "virtio_net", "virtio_console"}

// ModulesLoadFile is the initramfs file listing the modules to load, one
// path a line, in order.
const ModulesLoadFile = "/lib/modules/load"

// Kernel is an extracted Debian linux-image package.
type Kernel struct {
	Image   string // boot/vmlinuz-VERSION
	Modules string // lib/modules/VERSION
	Version string
}

// FindKernel locates the kernel image and its modules in dir, a directory
// holding an extracted linux-image package (dpkg -x linux-image-….deb DIR).
// Exactly one version must be there.
func FindKernel(dir string) (*Kernel, error) {
	imgs, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(imgs) != 1 {
		return nil, fmt.Errorf("kernel dir %s: want exactly one boot/vmlinuz-*, found %d (extract a linux-image package there with dpkg -x): %w", dir, len(imgs), spec.ErrNotFound)
	}
	ver := strings.TrimPrefix(filepath.Base(imgs[0]), "vmlinuz-")
	mods := filepath.Join(dir, "lib", "modules", ver)
	if st, err := os.Stat(mods); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("kernel dir %s: no lib/modules/%s for %s: %w", dir, ver, imgs[0], spec.ErrNotFound)
	}
	return &Kernel{Image: imgs[0], Modules: mods, Version: ver}, nil
}

// moduleIndex maps module names (dashes as underscores) to their paths
// under k.Modules.
func (k *Kernel) moduleIndex() (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.Modules, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		for _, ext := range []string{".ko", ".ko.xz"} {
			if !d.IsDir() && strings.HasSuffix(name, ext) {
				idx[strings.ReplaceAll(strings.TrimSuffix(name, ext), "-", "_")] = p
			}
		}
		return nil
	})
	return idx, err
}

// readModule returns a module's ELF bytes. Debian's 6.1 packages ship
// uncompressed modules; compressed ones (.ko.xz, .ko.zst of later
// kernels) are refused with a clear error rather than passed to a kernel
// that may not decompress them.
func readModule(p string) ([]byte, error) {
	if strings.HasSuffix(p, ".xz") {
		return nil, fmt.Errorf("kernel module %s is xz-compressed: coffer vm needs a kernel package with uncompressed modules (Debian 6.1): %w", p, spec.ErrUnsupported)
	}
	return os.ReadFile(p)
}

// moduleDepends reads the depends= entry of a module's .modinfo.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

type module struct {
	name string
	ko   []byte
}

// resolveModules returns names and their dependencies, dependencies first.
func (k *Kernel) resolveModules(names []string) ([]module, error) {
	idx, err := k.moduleIndex()
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	var out []module
	seen := map[string]bool{}
	var visit func(n string, depth int) error
	visit = func(n string, depth int) error {
		n = strings.ReplaceAll(n, "-", "_")
		if seen[n] {
			return nil
		}
		if depth > 16 {
			return fmt.Errorf("kernel module %s: dependencies nest too deep", n)
		}
		seen[n] = true
		p, ok := idx[n]
		if !ok {
			return fmt.Errorf("kernel module %s not in %s (built in? then drop it from the list): %w", n, k.Modules, spec.ErrNotFound)
		}
		ko, err := readModule(p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(ko)
		if err != nil {
			return fmt.Errorf("kernel module %s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		out = append(out, module{name: n, ko: ko})
		return nil
	}
	for _, n := range names {
		if err := visit(n, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// WriteInitramfs writes the guest's initramfs to w: a newc cpio archive in
// gzip framing with stored (uncompressed) blocks holding init (the coffer binary at initPath) as /init, the
// kernel modules the guest loads (GuestModules and their dependencies,
// uncompressed) under /lib/modules, and ModulesLoadFile. Nothing else of
// the host goes in. The archive is reproducible: the same binary and kernel
// give the same bytes (zero timestamps, fixed order), so its measurements
// can be computed ahead of a boot. extras add modules, host tools and
// links (a guest with a scratch disk: disk.go).
func WriteInitramfs(w io.Writer, initPath string, k *Kernel, extras ...Extras) error {
	init, err := os.ReadFile(initPath)
	if err != nil {
		return fmt.Errorf("guest init: %w", err)
	}
	names := slices.Clone(GuestModules)
	var tools []string
	links := map[string]string{}
	for _, e := range extras {
		names = append(names, e.Modules...)
		tools = append(tools, e.Tools...)
		maps.Copy(links, e.Links)
	}
	mods, err := k.resolveModules(names)
	if err != nil {
		return err
	}
	files, err := toolFiles(tools)
	if err != nil {
		return err
	}
	// Stored blocks: under TCG the guest's inflate of a compressed /init
	// (the ~90 MB static coffer) took ~5 s of each boot, and the host's
	// deflate ~1 s; the kernel still reads gzip framing (BenchmarkRun: a
	// boot to the container's exit, 19.3 s compressed, 14.2 s stored).
	zw, err := gzip.NewWriterLevel(w, gzip.NoCompression)
	if err != nil {
		return err
	}
	cw := &cpioWriter{w: zw}
	for _, d := range []string{"dev", "lib", "lib/modules", "proc", "sys", "run", "tmp"} {
		cw.dir(d)
	}
	cw.charDev("dev/console", 5, 1)
	cw.file("init", 0o755, init)
	var load []string
	for _, m := range mods {
		p := "lib/modules/" + m.name + ".ko"
		cw.file(p, 0o644, m.ko)
		load = append(load, "/"+p)
	}
	cw.file(strings.TrimPrefix(ModulesLoadFile, "/"), 0o644, []byte(strings.Join(load, "\n")+"\n"))
	made := map[string]bool{"dev": true, "lib": true, "lib/modules": true, "proc": true, "sys": true, "run": true, "tmp": true}
	dirs := func(p string) {
		for _, d := range parents(p) {
			if !made[d] {
				cw.dir(d)
				made[d] = true
			}
		}
	}
	for _, g := range slices.Sorted(maps.Keys(files)) {
		b, err := os.ReadFile(files[g])
		if err != nil {
			return fmt.Errorf("guest tool: %w", err)
		}
		dirs(g)
		cw.file(strings.TrimPrefix(g, "/"), 0o755, b)
	}
	for _, l := range slices.Sorted(maps.Keys(links)) {
		dirs(l)
		cw.symlink(strings.TrimPrefix(l, "/"), links[l])
	}
	cw.trailer()
	if cw.err != nil {
		return cw.err
	}
	return zw.Close()
}

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format the kernel
// unpacks. The first error sticks.
type cpioWriter struct {
	w   io.Writer
	ino int
	n   int64
	err error
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) entry(name string, mode uint32, nlink int, data []byte, rmaj, rmin int) {
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFCHR = 0o020000
	sIFLNK = 0o120000
)

func (c *cpioWriter) dir(name string)                         { c.entry(name, sIFDIR|0o755, 2, nil, 0, 0) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, sIFREG|perm, 1, b, 0, 0) }
func (c *cpioWriter) charDev(name string, maj, min int) {
	c.entry(name, sIFCHR|0o600, 1, nil, maj, min)
}
func (c *cpioWriter) symlink(name, target string) {
	c.entry(name, sIFLNK|0o777, 1, []byte(target), 0, 0)
}
func (c *cpioWriter) trailer() { c.entry("TRAILER!!!", 0, 1, nil, 0, 0) }
