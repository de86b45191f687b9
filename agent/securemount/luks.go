package securemount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/spec"
)

// luksMagic starts a LUKS (1 or 2) header.
var luksMagic = []byte("LUKS\xba\xbe")

// HasLUKSHeader reports whether the device or file at path starts with a
// LUKS header.
func HasLUKSHeader(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(luksMagic))
	if _, err := f.ReadAt(b, 0); err != nil {
		return false
	}
	return bytes.Equal(b, luksMagic)
}

// cryptsetup exit codes (cryptsetup(8), RETURN CODES).
const (
	csWrongKey = 2 // "no permission (bad passphrase)"
)

// run runs a tool with stdin and returns its exit status; stderr's last
// line is in the error. Key material goes only to stdin.
func (m *Mounter) run(ctx context.Context, bin string, stdin []byte, args ...string) (int, error) {
	return m.runOut(ctx, bin, stdin, nil, args...)
}

// runOut is run with stdout kept (its first 64 KiB) in stdout.
func (m *Mounter) runOut(ctx context.Context, bin string, stdin []byte, stdout *bytes.Buffer, args ...string) (int, error) {
	what := filepath.Base(bin)
	if args[0] != "" && args[0][0] != '-' {
		what += " " + args[0]
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	// No udev in a vm or Kata guest: libdevmapper makes /dev/mapper/NAME
	// itself instead of waiting for udev to.
	cmd.Env = append(os.Environ(), "DM_DISABLE_UDEV=1", "LC_ALL=C")
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &limited{&stderr, 4096}
	if stdout != nil {
		cmd.Stdout = &limited{stdout, 64 << 10}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), fmt.Errorf("%s: exit %d: %s", what, ee.ExitCode(), lastLine(stderr.Bytes()))
	}
	if err != nil {
		if ctx.Err() != nil {
			return -1, fmt.Errorf("%s: %w", what, ctx.Err())
		}
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	return 0, nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// limited keeps the first n bytes written to it.
type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if r := l.n - l.b.Len(); r > 0 {
		l.b.Write(p[:min(r, len(p))])
	}
	return len(p), nil
}

func (m *Mounter) pbkdfArgs() []string {
	if m.pbkdf == "" {
		return nil
	}
	a := []string{"--pbkdf", m.pbkdf}
	if m.iterations > 0 {
		a = append(a, "--pbkdf-force-iterations", strconv.Itoa(m.iterations))
	}
	return a
}

// luksFormat makes dev a LUKS2 device whose one key slot opens with key,
// as CDH does: aes-xts-plain64, 4096-byte sectors, and with integrity
// hmac-sha256 sector tags (dm-integrity, neither wiped nor journaled at
// format time, as CDH formats them).
func (m *Mounter) luksFormat(ctx context.Context, dev string, key []byte, integrity bool) error {
	cs, err := tool(m.cryptsetup, "cryptsetup")
	if err != nil {
		return err
	}
	args := []string{"luksFormat", "--batch-mode", "--type", "luks2", "--cipher", "aes-xts-plain64", "--sector-size", "4096"}
	if integrity {
		args = append(args, "--integrity", "hmac-sha256", "--integrity-no-wipe", "--integrity-no-journal")
	}
	args = append(append(args, m.pbkdfArgs()...), "--key-file=-", dev)
	if _, err := m.run(ctx, cs, key, args...); err != nil {
		return fmt.Errorf("block-device: formatting %s as LUKS2: %w", dev, err)
	}
	return nil
}

// luksOpen maps dev at /dev/mapper/name with key. A key that opens no
// key slot wraps ErrWrongKey.
func (m *Mounter) luksOpen(ctx context.Context, dev, name string, key []byte) error {
	cs, err := tool(m.cryptsetup, "cryptsetup")
	if err != nil {
		return err
	}
	code, err := m.run(ctx, cs, key, "open", "--type", "luks", "--key-file=-", dev, name)
	if code == csWrongKey {
		return fmt.Errorf("block-device: %s: %w", dev, ErrWrongKey)
	}
	if err != nil {
		return fmt.Errorf("block-device: opening %s: %w", dev, err)
	}
	return nil
}

// CheckKey reports whether key opens a key slot of the LUKS device (or
// image file) at dev, without mapping it (cryptsetup open
// --test-passphrase: no device-mapper needed). A wrong key wraps
// ErrWrongKey.
func (m *Mounter) CheckKey(ctx context.Context, dev string, key []byte) error {
	cs, err := tool(m.cryptsetup, "cryptsetup")
	if err != nil {
		return err
	}
	code, err := m.run(ctx, cs, key, "open", "--test-passphrase", "--type", "luks", "--key-file=-", dev)
	if code == csWrongKey {
		return fmt.Errorf("block-device: %s: %w", dev, ErrWrongKey)
	}
	return err
}

// Format makes dev (a block device or an image file) a LUKS2 volume
// whose key is key, as a "block-device" request with sourceType "empty"
// does; it opens nothing.
func (m *Mounter) Format(ctx context.Context, dev string, key []byte) error {
	if len(key) == 0 || len(key) > MaxKeyBytes {
		return badRequest("a volume key of %d bytes: want 1 to %d", len(key), MaxKeyBytes)
	}
	return m.luksFormat(ctx, dev, key, false)
}

func (m *Mounter) luksClose(ctx context.Context, name string) error {
	cs, err := tool(m.cryptsetup, "cryptsetup")
	if err != nil {
		return err
	}
	_, err = m.run(ctx, cs, nil, "close", name)
	return err
}

// mkfs makes an ext4 file system on the cleartext device. On an
// integrity device that was not wiped, a read of a never-written sector
// fails its tag check, and mkfs.ext4 reads some before writing them
// (cryptsetup issue 525): as CDH does, a dry run lists the superblock
// backups, those blocks (and block 0) are written with zeros first, and
// inode tables are initialised at once (lazy_itable_init=0) unless the
// request set it.
func (m *Mounter) mkfs(ctx context.Context, dev string, extra []string, integrity bool) error {
	bin, err := tool(m.mkfsBin, "mkfs.ext4")
	if err != nil {
		return err
	}
	if integrity {
		var out bytes.Buffer
		if _, err := m.runOut(ctx, bin, nil, &out, append(append([]string{"-F", "-n"}, extra...), dev)...); err != nil {
			return fmt.Errorf("block-device: mkfs.ext4 dry run on %s: %w", dev, err)
		}
		bs, blocks, err := ParseMkfsDryRun(out.String())
		if err != nil {
			return fmt.Errorf("block-device: mkfs.ext4 dry run on %s: %w", dev, err)
		}
		if err := zeroBlocks(dev, bs, blocks); err != nil {
			return fmt.Errorf("block-device: preparing %s for mkfs.ext4: %w", dev, err)
		}
		extra = eagerInodeTables(extra)
	}
	args := append(append([]string{"-F", "-q"}, extra...), dev)
	if _, err := m.run(ctx, bin, nil, args...); err != nil {
		return fmt.Errorf("block-device: making ext4 on %s: %w", dev, err)
	}
	return nil
}

// ParseMkfsDryRun reads the block size and the superblock backup blocks
// from the output of mkfs.ext4 -n ("Creating filesystem with N 4k
// blocks …", "Superblock backups stored on blocks:" and the lines of
// numbers after it). Block 0 is always in the list. At most 1024 blocks,
// each below the file system's block count.
func ParseMkfsDryRun(out string) (blockSize int64, blocks []uint64, err error) {
	if len(out) > 64<<10 {
		return 0, nil, fmt.Errorf("mkfs.ext4 -n: %d bytes of output: %w", len(out), spec.ErrUnsupported)
	}
	var count uint64
	lines := strings.Split(out, "\n")
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "Creating filesystem with "); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				n, err1 := strconv.ParseUint(f[0], 10, 64)
				k, err2 := strconv.ParseInt(strings.TrimSuffix(f[1], "k"), 10, 64)
				if err1 == nil && err2 == nil && strings.HasSuffix(f[1], "k") && k >= 1 && k <= 64 && k&(k-1) == 0 {
					count, blockSize = n, k<<10
				}
			}
		}
	}
	if blockSize == 0 {
		return 0, nil, fmt.Errorf("mkfs.ext4 -n: no \"Creating filesystem with N Xk blocks\" line: %w", spec.ErrUnsupported)
	}
	blocks = []uint64{0}
	in := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "Superblock backups stored on blocks:") {
			in = true
			t = strings.TrimSpace(strings.TrimPrefix(t, "Superblock backups stored on blocks:"))
		} else if !in {
			continue
		}
		if t == "" {
			if len(blocks) > 1 {
				break
			}
			continue
		}
		for _, w := range strings.Split(t, ",") {
			w = strings.TrimSpace(w)
			if w == "" {
				continue
			}
			n, err := strconv.ParseUint(w, 10, 64)
			if err != nil {
				return 0, nil, fmt.Errorf("mkfs.ext4 -n: superblock backup %q is not a block number: %w", trunc(w), spec.ErrUnsupported)
			}
			if n >= count {
				return 0, nil, fmt.Errorf("mkfs.ext4 -n: superblock backup %d beyond the %d blocks: %w", n, count, spec.ErrUnsupported)
			}
			if len(blocks) == 1024 {
				return 0, nil, fmt.Errorf("mkfs.ext4 -n: more than 1024 superblock backups: %w", spec.ErrUnsupported)
			}
			blocks = append(blocks, n)
		}
	}
	return blockSize, blocks, nil
}

// zeroBlocks writes 4096 zero bytes (one LUKS2 sector, O_DIRECT) at the
// start of each block.
func zeroBlocks(dev string, blockSize int64, blocks []uint64) error {
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS) // page-aligned, zero
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, b := range blocks {
		off := int64(b) * blockSize &^ 4095
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// eagerInodeTables adds lazy_itable_init=0 to the extended options
// unless they set lazy_itable_init already.
func eagerInodeTables(args []string) []string {
	args = slices.Clone(args)
	for _, a := range args {
		if strings.Contains(a, "lazy_itable_init") {
			return args
		}
	}
	for i := len(args) - 1; i >= 0; i-- {
		switch {
		case args[i] == "-E" && i+1 < len(args):
			args[i+1] += ",lazy_itable_init=0"
			return args
		case strings.HasPrefix(args[i], "-E") && len(args[i]) > 2:
			args[i] += ",lazy_itable_init=0"
			return args
		}
	}
	return append(args, "-E", "lazy_itable_init=0")
}
