package securemount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
// as CDH does: aes-xts-plain64, 4096-byte sectors.
func (m *Mounter) luksFormat(ctx context.Context, dev string, key []byte) error {
	cs, err := tool(m.cryptsetup, "cryptsetup")
	if err != nil {
		return err
	}
	args := []string{"luksFormat", "--batch-mode", "--type", "luks2", "--cipher", "aes-xts-plain64", "--sector-size", "4096"}
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
	return m.luksFormat(ctx, dev, key)
}

func (m *Mounter) luksClose(ctx context.Context, name string) error {
	cs, err := tool(m.cryptsetup, "cryptsetup")
	if err != nil {
		return err
	}
	_, err = m.run(ctx, cs, nil, "close", name)
	return err
}

// mkfs makes an ext4 file system on the cleartext device.
func (m *Mounter) mkfs(ctx context.Context, dev string, extra []string) error {
	bin, err := tool(m.mkfsBin, "mkfs.ext4")
	if err != nil {
		return err
	}
	args := append(append([]string{"-F", "-q"}, extra...), dev)
	if _, err := m.run(ctx, bin, nil, args...); err != nil {
		return fmt.Errorf("block-device: making ext4 on %s: %w", dev, err)
	}
	return nil
}
