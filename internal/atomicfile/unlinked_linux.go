package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

// writeUnlinked commits base in dir (inside root) through an O_TMPFILE
// inode. ok is false when O_TMPFILE is not available there (nothing was
// written; the caller falls back to a named temp file).
func writeUnlinked(root *os.Root, dir, base string, fill func(io.Writer) error, o options) (ok bool, err error) {
	d, err := root.Open(dir)
	if err != nil {
		return true, err
	}
	defer d.Close()
	dfd := int(d.Fd())
	fd, err := unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return true, err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close() // unnamed until linked: closing it unlinked frees it
	if err := fill(f); err != nil {
		return true, err
	}
	if err := f.Chmod(o.mode); err != nil {
		return true, err
	}
	if err := f.Sync(); err != nil {
		return true, err
	}
	target := base
	if !o.noReplace {
		// linkat cannot replace: link under a fresh name, then rename over base
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		target = ".tmp-" + base + "-" + hex.EncodeToString(rnd[:])
	}
	if err := link(fd, dfd, target); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return true, fmt.Errorf("%s already exists: %w", base, fs.ErrExist)
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			// neither /proc nor CAP_DAC_READ_SEARCH: copy the finished
			// file into a named temp file (the caller's fallback)
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return true, err
			}
			return true, WriteIn(root, path.Join(dir, base), func(w io.Writer) error { _, err := io.Copy(w, f); return err }, optionsOf(o)...)
		}
		return true, err
	}
	if target != base {
		if err := unix.Renameat(dfd, target, dfd, base); err != nil {
			_ = unix.Unlinkat(dfd, target, 0)
			return true, err
		}
	}
	return true, d.Sync()
}

// link gives the unnamed inode fd the name target in directory dfd.
func link(fd, dfd int, target string) error {
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dfd, target, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Linkat(fd, "", dfd, target, unix.AT_EMPTY_PATH) // needs CAP_DAC_READ_SEARCH
	}
	return err
}

func optionsOf(o options) []Option {
	opts := []Option{Mode(o.mode)}
	if o.noReplace {
		opts = append(opts, NoReplace())
	}
	return opts
}
