package vm

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/vm/console"
)

// ScratchModules are the kernel modules a guest with a scratch disk
// loads besides GuestModules (dependencies are added): virtio-blk, dm-crypt
// with the xts(aes) cipher (aes is built into Debian's kernel; nothing in
// the guest can load a module on demand, so the xts and ecb templates are
// loaded ahead), the kernel crypto API's user interface (libcryptsetup
// encrypts LUKS2 key slots through AF_ALG), and ext4 with the crc32c it
// asks the crypto API for; dm_integrity and authenc for disks with
// integrity tags (authenc(hmac(sha256),xts(aes)); hmac and sha256 are
// built in).
var ScratchModules = []string{"virtio_blk", "dm_mod", "dm_crypt", "ecb", "xts", "af_alg", "algif_skcipher", "algif_hash", "crc32c_generic", "ext4",
	"dm_integrity", "authenc"}

// ScratchTools are the host binaries a guest with a scratch disk carries,
// at the same paths, with the shared libraries their ELF headers need
// (resolved as ld.so would in the multiarch directories) and their
// interpreter. Debian ships no static cryptsetup (cryptsetup-bin links
// libcryptsetup, libdevmapper, libcrypto …), so the libraries go in:
// about 11 MiB. mkfs.ext4 is added as a link to mke2fs.
var ScratchTools = []string{"/usr/sbin/cryptsetup", "/usr/sbin/mke2fs"}

// DefaultScratchMiB is the size of a scratch disk created without a size.
const DefaultScratchMiB = 4096

// maxScratchMiB bounds a scratch disk's size (16 TiB).
const maxScratchMiB = 16 << 20

type diskOptions struct {
	path      string
	sizeMiB   int64
	keyID     string
	integrity bool
}

// WithScratchDisk gives the guest the disk image at path (raw; created
// sparse with sizeMiB, default DefaultScratchMiB, when it does not exist)
// as a virtio-blk device. In a run, the guest fetches the disk's key from
// the broker (WithScratchKey, required), opens the LUKS2 volume on it
// (formatting it first when it holds no LUKS header) and unpacks the
// image there instead of in memory, so images larger than the guest's
// RAM fit. A disk formatted with another key fails the run (spec.ErrNoKey):
// nothing is mounted. What a re-opened disk held is deleted first.
func WithScratchDisk(path string, sizeMiB int64) Option {
	return func(o *options) error {
		if path == "" {
			return fmt.Errorf("scratch disk: a path is required: %w", spec.ErrUnsupported)
		}
		if strings.ContainsAny(path, ",\n") {
			return fmt.Errorf("scratch disk %q: a path with a comma cannot be passed to QEMU: %w", path, spec.ErrUnsupported)
		}
		if sizeMiB < 0 || sizeMiB > maxScratchMiB || sizeMiB > 0 && sizeMiB < 64 {
			return fmt.Errorf("scratch disk size %d MiB: want 64 to %d: %w", sizeMiB, maxScratchMiB, spec.ErrUnsupported)
		}
		if sizeMiB == 0 {
			sizeMiB = DefaultScratchMiB
		}
		if o.disk == nil {
			o.disk = &diskOptions{}
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		o.disk.path, o.disk.sizeMiB = abs, sizeMiB
		return nil
	}
}

// WithScratchKey names the broker resource (repo/type/tag or
// kbs:///repo/type/tag) holding the scratch disk's LUKS2 key.
func WithScratchKey(id string) Option {
	return func(o *options) error {
		p, err := resource.ParseKeyID(id)
		if err != nil {
			return fmt.Errorf("scratch disk key: %w", err)
		}
		if o.disk == nil {
			o.disk = &diskOptions{}
		}
		o.disk.keyID = p.KID()
		return nil
	}
}

// WithScratchIntegrity makes a scratch disk the guest formats carry
// dm-integrity sector tags (hmac-sha256) under LUKS2, as CDH's
// dataIntegrity does: tampering with the disk image then fails reads
// instead of handing the guest garbage. It costs a tag write per sector
// and shrinks the usable space; a disk already formatted keeps its own
// setting.
func WithScratchIntegrity() Option {
	return func(o *options) error {
		if o.disk == nil {
			o.disk = &diskOptions{}
		}
		o.disk.integrity = true
		return nil
	}
}

// checkDisk validates the disk options of a run.
func (o *options) checkDisk() error {
	switch {
	case o.disk == nil:
		return nil
	case o.disk.path == "":
		return fmt.Errorf("vm: a scratch disk key without a scratch disk: %w", spec.ErrUnsupported)
	case o.disk.keyID == "":
		return fmt.Errorf("vm: the scratch disk needs its key's broker resource (WithScratchKey, --scratch-key-id): %w", spec.ErrUnsupported)
	}
	return nil
}

// scratchConfig is what the guest is told about its disk.
func (o *options) scratchConfig() *console.Scratch {
	if o.disk == nil {
		return nil
	}
	return &console.Scratch{KeyID: o.disk.keyID, Serial: console.ScratchSerial, Integrity: o.disk.integrity}
}

// diskArgs creates the disk image if missing and returns QEMU's
// arguments for it (none without a disk). Measure boots with the same
// device as Run: firmware measurements may depend on it.
func (o *options) diskArgs() ([]string, error) {
	if o.disk == nil || o.disk.path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(o.disk.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		err = f.Truncate(o.disk.sizeMiB << 20)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(o.disk.path)
			return nil, fmt.Errorf("scratch disk: %w", err)
		}
	case errors.Is(err, os.ErrExist):
		fi, err := os.Stat(o.disk.path)
		if err != nil {
			return nil, fmt.Errorf("scratch disk: %w", err)
		}
		if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
			return nil, fmt.Errorf("scratch disk %s: not a file or block device: %w", o.disk.path, spec.ErrUnsupported)
		}
	default:
		return nil, fmt.Errorf("scratch disk: %w", err)
	}
	return []string{"-drive", "file=" + o.disk.path + ",format=raw,if=none,id=scratch,discard=unmap",
		"-device", "virtio-blk-pci,drive=scratch,serial=" + console.ScratchSerial}, nil
}

// initramfsExtras is what a guest with a scratch disk carries besides
// init and GuestModules.
func (o *options) initramfsExtras() []Extras {
	if o.disk == nil {
		return nil
	}
	return []Extras{{Modules: ScratchModules, Tools: ScratchTools, Links: map[string]string{"/usr/sbin/mkfs.ext4": "mke2fs"}}}
}

// Extras are more files for WriteInitramfs: kernel modules (by name,
// with their dependencies), host binaries (at the same path, with their
// shared libraries and ELF interpreter) and symbolic links (path →
// target).
type Extras struct {
	Modules []string
	Tools   []string
	Links   map[string]string
}

// libDirs are where ld.so finds libraries on Debian amd64 (no
// ld.so.cache in the guest: it searches its built-in directories, which
// include /lib/x86_64-linux-gnu).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// toolFiles returns the guest paths and host files of tools, their
// interpreters and their shared libraries (transitively), sorted by
// guest path. Libraries go into /lib/x86_64-linux-gnu whatever host
// directory holds them.
func toolFiles(tools []string) (map[string]string, error) {
	files := map[string]string{}
	var visit func(host, guest string, depth int) error
	visit = func(host, guest string, depth int) error {
		if _, ok := files[guest]; ok {
			return nil
		}
		if depth > 16 {
			return fmt.Errorf("%s: shared libraries nest too deep", host)
		}
		real, err := filepath.EvalSymlinks(host)
		if err != nil {
			return fmt.Errorf("guest tool %s: %w (apt-get install cryptsetup-bin e2fsprogs)", host, err)
		}
		files[guest] = real
		f, err := elf.Open(real)
		if err != nil {
			return fmt.Errorf("guest tool %s: %w", host, err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("guest tool %s: %w", host, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if err := visit(interp, interp, depth+1); err != nil {
				return err
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("guest tool %s: %w", host, err)
		}
		for _, l := range libs {
			if strings.Contains(l, "/") {
				return fmt.Errorf("guest tool %s needs %s by path: %w", host, l, spec.ErrUnsupported)
			}
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, l)); err == nil {
					found = filepath.Join(d, l)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("guest tool %s needs %s, not found in %s: %w", host, l, strings.Join(libDirs, ", "), spec.ErrNotFound)
			}
			if err := visit(found, "/lib/x86_64-linux-gnu/"+l, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range tools {
		if err := visit(t, t, 0); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// parents returns the directories above p (relative, outermost first).
func parents(p string) []string {
	var out []string
	for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
		out = append(out, strings.TrimPrefix(d, "/"))
	}
	slices.Reverse(out)
	return out
}
