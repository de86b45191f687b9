// Package securemount implements the storage drivers behind
// guest-components' SecureMountService (CDH's secure mount): a request
// names a volume type, string options, flags and a mount point, and the
// driver registered for that type mounts the volume there. The
// "block-device" driver opens (or, for an empty device, first formats) a
// LUKS2 volume with Debian's cryptsetup, the key coming from the broker
// (kbs:///repo/type/tag), a sealed secret or a guest file, and mounts an
// ext4 file system from it (or exposes the cleartext device).
//
// Option names and semantics follow guest-components' CDH (commit
// 8246e5e0, hub/src/storage): see docs/kata.md. Every option is bounded
// and validated before anything runs; keys reach cryptsetup on its stdin,
// never a file, and never appear in logs or errors.
package securemount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// Request is one SecureMount call (CDH's Storage).
type Request struct {
	VolumeType string
	Options    map[string]string
	Flags      []string
	MountPoint string
}

// Driver mounts one volume type. Adding a type = a new file with its
// Driver + one line in the drivers table.
type Driver interface {
	// Mount validates req (its VolumeType already matched) and mounts it.
	Mount(ctx context.Context, m *Mounter, req *Request) error
}

// Bounds on a request, checked before any option is parsed.
const (
	MaxOptions     = 32
	MaxOptionBytes = 4096 // one key or value
	MaxFlags       = 32
	MaxFlagBytes   = 256
	MaxPathBytes   = 4096
	MaxKeyBytes    = 8 << 10 // a volume key (cryptsetup's own limit is 8 MiB)
)

// ErrBadRequest marks a request refused for its shape (an unknown option,
// a malformed value); callers map it to InvalidArgument.
var ErrBadRequest = errors.New("bad secure mount request")

// ErrUnimplemented marks a volume type or option coffer knows but does
// not implement.
var ErrUnimplemented = errors.New("not implemented by coffer")

// ErrWrongKey is wrapped (with spec.ErrNoKey) when the key does not open
// the LUKS2 device.
var ErrWrongKey = fmt.Errorf("the key does not open the LUKS2 device: %w", spec.ErrNoKey)

func badRequest(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrBadRequest)
}

// Option configures New.
type Option func(*Mounter) error

// Mounter runs secure mounts. Make one with New.
type Mounter struct {
	keys       resource.Getter
	unseal     func(ctx context.Context, secret string) ([]byte, error)
	cryptsetup string
	mkfsBin    string
	pbkdf      string
	iterations int
	log        *slog.Logger
}

// WithKeys fetches kbs:///repo/type/tag keys through g (the agent's
// broker client). Default: none, so such keys are refused.
func WithKeys(g resource.Getter) Option { return func(m *Mounter) error { m.keys = g; return nil } }

// WithUnsealer unseals "sealed." keys (CDH's sealed secrets) with f.
// Default: none, so such keys are refused.
func WithUnsealer(f func(ctx context.Context, secret string) ([]byte, error)) Option {
	return func(m *Mounter) error { m.unseal = f; return nil }
}

// WithTools names the cryptsetup and mkfs.ext4 binaries (default: found
// in PATH when a mount needs them).
func WithTools(cryptsetup, mkfsExt4 string) Option {
	return func(m *Mounter) error { m.cryptsetup, m.mkfsBin = cryptsetup, mkfsExt4; return nil }
}

// WithPBKDF sets the key derivation luksFormat gives new key slots:
// "argon2id", "argon2i" or "pbkdf2", with iterations forced when > 0
// (pbkdf2 at least 1000; for the argon2 ones, time cost). Default:
// cryptsetup's own (argon2id, benchmarked to 2 s). A broker key is
// random, not a passphrase, so a cheap PBKDF costs no security there: the
// vm guest's scratch disk uses pbkdf2 with 1000 iterations, which keeps
// QEMU TCG boots fast.
func WithPBKDF(name string, iterations int) Option {
	return func(m *Mounter) error {
		switch name {
		case "argon2id", "argon2i":
			if iterations < 0 || iterations > 1000 {
				return fmt.Errorf("securemount: %s time cost %d: want 0 to 1000: %w", name, iterations, spec.ErrUnsupported)
			}
		case "pbkdf2":
			if iterations != 0 && (iterations < 1000 || iterations > 1<<24) {
				return fmt.Errorf("securemount: pbkdf2 iterations %d: want 1000 to 16777216: %w", iterations, spec.ErrUnsupported)
			}
		default:
			return fmt.Errorf("securemount: PBKDF %q: want argon2id, argon2i or pbkdf2: %w", name, spec.ErrUnsupported)
		}
		m.pbkdf, m.iterations = name, iterations
		return nil
	}
}

// WithLogger logs each mount (device, mapper name, mount point; never a
// key). Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(m *Mounter) error {
		if l != nil {
			m.log = l
		}
		return nil
	}
}

// New returns a Mounter.
func New(opts ...Option) (*Mounter, error) {
	m := &Mounter{log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		if err := f(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Mount checks req's bounds, finds the driver registered for its volume
// type and has it mount the volume. A refused request wraps ErrBadRequest
// (or ErrUnimplemented); a wrong key wraps ErrWrongKey; a broker denial
// wraps the broker's sentinel.
func (m *Mounter) Mount(ctx context.Context, req *Request) error {
	if err := CheckRequest(req); err != nil {
		return err
	}
	d, ok := drivers[req.VolumeType]
	if !ok {
		vt := req.VolumeType
		if len(vt) > 64 {
			vt = vt[:64] + "…"
		}
		return badRequest("unknown volume type %q (want one of %s)", vt, strings.Join(VolumeTypes(), ", "))
	}
	return d.Mount(ctx, m, req)
}

// CheckRequest checks the bounds every request must meet: a volume type,
// at most MaxOptions options and MaxFlags flags of bounded size, and a
// clean absolute mount point that is not a system directory.
func CheckRequest(req *Request) error {
	if req == nil || req.VolumeType == "" {
		return badRequest("volume_type is empty")
	}
	if len(req.VolumeType) > MaxOptionBytes {
		return badRequest("volume_type of %d bytes", len(req.VolumeType))
	}
	if len(req.Options) > MaxOptions {
		return badRequest("%d options (at most %d)", len(req.Options), MaxOptions)
	}
	for k, v := range req.Options {
		if len(k) > MaxOptionBytes || len(v) > MaxOptionBytes {
			return badRequest("an option of more than %d bytes", MaxOptionBytes)
		}
	}
	if len(req.Flags) > MaxFlags {
		return badRequest("%d flags (at most %d)", len(req.Flags), MaxFlags)
	}
	for _, f := range req.Flags {
		if len(f) > MaxFlagBytes {
			return badRequest("a flag of more than %d bytes", MaxFlagBytes)
		}
	}
	return checkMountPoint(req.MountPoint)
}

// systemDirs may not be mount points (nor hold one: /proc/…, /sys/…).
var systemDirs = []string{"/", "/proc", "/sys", "/dev", "/run", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/run/confidential-containers"}

func checkMountPoint(p string) error {
	if p == "" {
		return badRequest("mount_point is empty")
	}
	if err := checkPath("mount_point", p); err != nil {
		return err
	}
	for _, s := range systemDirs {
		if p == s {
			return badRequest("mount_point %s is a system directory", p)
		}
	}
	for _, s := range []string{"/proc/", "/sys/", "/dev/"} {
		if strings.HasPrefix(p, s) {
			return badRequest("mount_point %s is under %s", p, s)
		}
	}
	return nil
}

// checkPath accepts clean absolute paths of bounded length without NUL
// or control characters.
func checkPath(what, p string) error {
	if len(p) > MaxPathBytes {
		return badRequest("%s of %d bytes (at most %d)", what, len(p), MaxPathBytes)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return badRequest("%s %q holds a control character", what, p)
		}
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return badRequest("%s %q must be a clean absolute path", what, p)
	}
	return nil
}

// tool returns the path of a binary: the configured one, else PATH's.
func tool(configured, name string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found (Debian: apt-get install %s): %w", name, map[string]string{"cryptsetup": "cryptsetup-bin", "mkfs.ext4": "e2fsprogs"}[name], spec.ErrNotFound)
	}
	return p, nil
}
