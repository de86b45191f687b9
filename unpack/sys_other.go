//go:build !linux

package unpack

import (
	"archive/tar"
	"errors"
	"os"
	"time"
)

var errNoMknod = errors.New("mknod not supported on this platform")

func futimes(f *os.File, atime, mtime time.Time) error { return os.Chtimes(f.Name(), atime, mtime) }

func (a *applier) lutimes(p string, atime, mtime time.Time) error {
	return errors.ErrUnsupported
}

func (a *applier) mknod(p string, hdr *tar.Header) error { return errNoMknod }

func fsetxattr(f *os.File, name, value string) error { return errors.ErrUnsupported }

func renameNoReplace(src, dst string) error { return os.Rename(src, dst) }
