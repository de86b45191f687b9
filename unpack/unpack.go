// Package unpack applies OCI image layers, in order, to a root file system
// directory, safely.
//
// Every file system operation goes through an [os.Root] opened on the
// rootfs, so no entry can create, change or remove anything outside it, and
// symbolic links met on the way to an entry are resolved the way a chroot
// would: an absolute target starts again at the rootfs and ".." stops at it
// (as containerd and umoci do), so "/etc/x" written through a link to "/"
// lands in rootfs/etc/x. Symbolic links themselves are created exactly as
// the layer says, and an entry replacing a symlink replaces the link, never
// its target.
//
// Entry names are confined, not rewritten: a leading "/" is dropped (so
// "/etc/passwd" and "./etc/passwd" are the same entry), "a/../b" is cleaned
// to "b", and any name or hard link target that would climb above the rootfs
// ("../x", "a/../../x") makes the layer fail with an error wrapping
// [ErrUnsafePath], as containerd does. Hard links must name an existing
// non-directory inside the rootfs.
//
// OCI whiteouts (".wh.NAME") and opaque directory markers (".wh..wh..opq")
// remove content of lower layers only: entries written earlier by the same
// layer are kept, as the OCI image spec requires, wherever the marker sits
// in the tar.
//
// Modes (including set-id and sticky bits) and mtimes are kept (an
// unprivileged unpack keeps read-only directories writable until the end,
// then restores their modes); uid and gid
// when running as root (see [WithSameOwner]). Device nodes and fifos are
// created only as root and skipped with a warning otherwise. Extended
// attributes (SCHILY.xattr.*) are best effort on files and directories.
// GNU sparse files keep their holes.
//
// Sizes are bounded before anything is read: a regular file whose apparent
// size (the size its tar header declares, holes included) is over
// [WithMaxFileSize], or that would take the sum of the apparent sizes of
// every regular file entry across all layers over [WithMaxRootfsSize], fails
// the layer with an error wrapping [ErrTooLarge]. A tar header of a few
// hundred bytes can declare an exabyte-sized sparse file; without these
// bounds unpacking it would never end. Holes are still read as zeros (the
// standard library offers no way to skip them), quickly and checking the
// context every 256 KiB, so the bounds also bound the time spent. At most
// 1 MiB may follow a layer's end-of-archive marker (padding is a few KiB).
//
// [Apply] unpacks into a temporary directory next to the destination and
// renames it into place only after every layer applied and every diffID
// matched, so a failure never leaves a partial rootfs behind. A tar cut
// exactly at an entry boundary looks complete to a tar reader; only the
// diffID catches that, so pass it whenever the image config has one.
package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/staging"
	"github.com/coffer-dev/coffer/spec"
)

// ErrUnsafePath marks a layer entry (or hard link target) whose name climbs
// out of the rootfs. It wraps [spec.ErrIntegrity]: such a layer is malformed
// or hostile and is never applied in part.
var ErrUnsafePath = fmt.Errorf("unsafe path in layer: %w", spec.ErrIntegrity)

// ErrTooLarge marks a layer whose files exceed [WithMaxFileSize] or
// [WithMaxRootfsSize]. It wraps [spec.ErrIntegrity]: the layer is refused
// before any of the offending file is written.
var ErrTooLarge = fmt.Errorf("layer exceeds a size limit: %w", spec.ErrIntegrity)

// Default size limits; see [WithMaxFileSize] and [WithMaxRootfsSize].
const (
	DefaultMaxFileSize   int64 = 64 << 30  // 64 GiB
	DefaultMaxRootfsSize int64 = 256 << 30 // 256 GiB
)

// Layer is one layer to apply: its blob stream and what to expect of it.
type Layer struct {
	// MediaType is the OCI or Docker layer media type (tar, tar+gzip,
	// tar+zstd). Encrypted types are rejected: decrypt first. The
	// compression is detected from the stream's magic bytes, so a
	// mislabelled layer still unpacks (the diffID check still applies).
	MediaType string
	// Open returns the (already decrypted and authenticated) blob bytes.
	Open func() (io.ReadCloser, error)
	// DiffID is the expected digest of the uncompressed tar, from the image
	// config. The zero value skips the check.
	DiffID v1.Hash
}

// Option configures Apply and ApplyLayer.
type Option func(*options) error

type options struct {
	sameOwner bool
	log       *slog.Logger
	// privileged reports whether device nodes may be created. It is
	// os.Geteuid() == 0; tests in this package flip it.
	privileged bool
	// maxFile and maxTotal bound the apparent size of one regular file and
	// the sum over all of them (see WithMaxFileSize, WithMaxRootfsSize).
	maxFile, maxTotal int64
}

func newOptions(opts []Option) (*options, error) {
	root := os.Geteuid() == 0
	o := &options{
		sameOwner: root, privileged: root, log: slog.New(slog.DiscardHandler),
		maxFile: DefaultMaxFileSize, maxTotal: DefaultMaxRootfsSize,
	}
	for _, f := range opts {
		if f == nil {
			continue
		}
		if err := f(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithSameOwner sets whether the uid and gid recorded in the layers are
// applied to the files. Default: true when running as root (euid 0), false
// otherwise (files then belong to the calling user). Asking for it without
// the privilege makes the unpack fail on the first chown.
func WithSameOwner(b bool) Option {
	return func(o *options) error { o.sameOwner = b; return nil }
}

// WithLogger sets the logger for skipped entries and best-effort failures
// (xattrs, device nodes when unprivileged). Default: discard. A nil logger
// means discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		o.log = l
		return nil
	}
}

// WithMaxFileSize bounds the apparent size of each regular file, holes of
// sparse files included: an entry declaring more fails the layer with
// [ErrTooLarge] before anything of it is written. Default:
// [DefaultMaxFileSize] (64 GiB). n must be positive.
func WithMaxFileSize(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("maximum file size must be positive, got %d", n)
		}
		o.maxFile = n
		return nil
	}
}

// WithMaxRootfsSize bounds the sum of the apparent sizes of every regular
// file entry of every layer (Apply) or of the one layer (ApplyLayer), holes
// included and counting files that later entries replace or whiteouts
// remove: the entry that would go over it fails the layer with
// [ErrTooLarge] before anything of it is written. Default:
// [DefaultMaxRootfsSize] (256 GiB). n must be positive.
func WithMaxRootfsSize(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("maximum rootfs size must be positive, got %d", n)
		}
		o.maxTotal = n
		return nil
	}
}

// Apply applies layers in order into a new directory dst, which must not
// exist. It unpacks into a temporary directory next to dst and renames it to
// dst at the end, after every layer's diffID matched; on any error nothing
// is left at dst and the temporary directory is removed.
func Apply(ctx context.Context, dst string, layers []Layer, opts ...Option) (err error) {
	o, err := newOptions(opts)
	if err != nil {
		return err
	}
	dst = filepath.Clean(dst)
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("unpack destination %s: %w", dst, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpack destination: %w", err)
	}
	tmp, err := staging.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".unpack-") // sweeps what a killed run left
	if err != nil {
		return fmt.Errorf("creating staging directory: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := removeAll(tmp); rerr != nil {
				o.log.Warn("removing staging directory", "dir", tmp, "err", rerr)
			}
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return err
	}
	defer root.Close()
	st := newState(o)
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := applyBlob(ctx, root, l, o, st); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if err := restoreModes(root, st.locked); err != nil {
		return err
	}
	if err := root.Close(); err != nil {
		return err
	}
	if err := renameNoReplace(tmp, dst); err != nil {
		return fmt.Errorf("moving rootfs into place: %w", err)
	}
	return nil
}

// applyBlob opens, decompresses and applies one layer, then reads the tar
// stream to its very end so the diffID is checked before Apply commits.
func applyBlob(ctx context.Context, root *os.Root, l Layer, o *options, st *state) error {
	if l.Open == nil {
		return errors.New("layer has no Open function")
	}
	rc, err := l.Open()
	if err != nil {
		return fmt.Errorf("opening layer: %w", err)
	}
	defer rc.Close()
	tr, err := Decompress(l.MediaType, rc, l.DiffID)
	if err != nil {
		return err
	}
	defer tr.Close()
	if err := applyLayer(ctx, root, tr, o, st); err != nil {
		return err
	}
	// The tar end marker may be followed by padding (GNU tar fills its
	// 10 KiB records); the diffID covers it. Far more is no padding, and
	// would be decompressed and hashed for nothing: a few KiB of zstd can
	// stand for many GiB of zeros.
	n, err := io.Copy(io.Discard, io.LimitReader(tr, maxTrailing+1))
	if err != nil {
		return err
	}
	if n > maxTrailing {
		return fmt.Errorf("more than %s of data after the end of the tar archive: %w", iec(maxTrailing), ErrTooLarge)
	}
	return nil
}

// maxTrailing bounds the bytes after a layer's end-of-archive marker.
const maxTrailing = 1 << 20

// ApplyLayer applies one uncompressed tar stream onto the existing rootfs
// directory. It reads r up to the tar end-of-archive marker, not
// necessarily to EOF. On error the rootfs is left partly changed: use
// Apply for all-or-nothing.
func ApplyLayer(ctx context.Context, rootfs string, r io.Reader, opts ...Option) error {
	o, err := newOptions(opts)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	st := newState(o)
	if err := applyLayer(ctx, root, r, o, st); err != nil {
		return err
	}
	return restoreModes(root, st.locked)
}

// removeAll removes dir even when the unpacked tree holds read-only
// directories (which an unprivileged user cannot empty before chmod).
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
