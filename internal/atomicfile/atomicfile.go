// Package atomicfile is coffer's one way to commit a file: write a temp
// file in the target's directory, set its mode, fsync it, move it into
// place (rename, or a hard link when the name must not exist yet), and
// fsync the directory. A reader sees the old file or the whole new one;
// a crash leaves at most a stray ".tmp-" file; a failure removes the temp
// file and changes nothing. With Unlinked, the file is written without a
// name (Linux O_TMPFILE) and linked in only once complete, so not even a
// SIGKILL mid-write leaves anything behind.
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
	"path/filepath"
)

type options struct {
	mode      os.FileMode
	noReplace bool
	unlinked  bool
}

// Unlinked writes the file as an unnamed inode in the target's directory
// (open(2) with O_TMPFILE) and gives it a name (linkat(2) through
// /proc/self/fd) only once fill returned, was fsynced and chmodded: until
// then no name exists, so a process killed mid-write (SIGKILL included)
// leaves nothing behind. Where the file system or kernel lacks O_TMPFILE
// it falls back to the named temp file (removed on every failure the
// process lives through). For staged plaintext.
func Unlinked() Option { return func(o *options) { o.unlinked = true } }

// Option configures a write.
type Option func(*options)

// Mode sets the file's permission bits, whatever the umask. Default: 0600.
func Mode(m os.FileMode) Option { return func(o *options) { o.mode = m.Perm() } }

// NoReplace fails (wrapping fs.ErrExist) when the name already exists,
// atomically: the check and the commit are one link(2).
func NoReplace() Option { return func(o *options) { o.noReplace = true } }

// Write commits data at path.
func Write(path string, data []byte, opts ...Option) error {
	return WriteFunc(path, func(w io.Writer) error { _, err := w.Write(data); return err }, opts...)
}

// WriteFunc commits at path what fill writes.
func WriteFunc(path string, fill func(io.Writer) error, opts ...Option) error {
	dir, name := filepath.Split(filepath.Clean(path))
	if dir == "" {
		dir = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer root.Close()
	if err := WriteIn(root, name, fill, opts...); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// WriteIn commits name (slash-separated, inside root) with what fill writes;
// nothing it does leaves root.
func WriteIn(root *os.Root, name string, fill func(io.Writer) error, opts ...Option) error {
	o := options{mode: 0o600}
	for _, opt := range opts {
		opt(&o)
	}
	dir, base := path.Split(name)
	if dir == "" {
		dir = "."
	}
	if o.unlinked {
		if ok, err := writeUnlinked(root, dir, base, fill, o); ok {
			return err
		}
		// no O_TMPFILE here: the named temp file below
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(dir, ".tmp-"+base+"-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			_ = root.Remove(tmp)
		}
	}()
	err = fill(f)
	if err == nil {
		err = f.Chmod(o.mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if o.noReplace {
		if err := root.Link(tmp, name); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s already exists: %w", name, fs.ErrExist)
			}
			return err
		}
		_ = root.Remove(tmp) // the name holds the file now
		committed = true
	} else {
		if err := root.Rename(tmp, name); err != nil {
			return err
		}
		committed = true
	}
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
