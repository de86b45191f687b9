package unpack

import (
	"archive/tar"
	"errors"
	"os"
	"path"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errNoMknod: this platform cannot create device nodes.
var errNoMknod = errors.New("mknod not supported")

// withFd runs fn on f's descriptor.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// inParent runs fn with a descriptor of p's parent directory (opened
// through the root) and p's last component.
func (a *applier) inParent(p string, fn func(dirfd int, base string) error) error {
	d, err := a.root.Open(path.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return withFd(d, func(fd int) error { return fn(fd, path.Base(p)) })
}

func timespecs(atime, mtime time.Time) [2]unix.Timespec {
	return [2]unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
}

// futimes sets the times of the open file f (utimensat with a NULL path,
// as futimens does).
func futimes(f *os.File, atime, mtime time.Time) error {
	ts := timespecs(atime, mtime)
	err := withFd(f, func(fd int) error {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return &os.PathError{Op: "futimens", Path: f.Name(), Err: err}
	}
	return nil
}

// lutimes sets the times of the symlink p itself.
func (a *applier) lutimes(p string, atime, mtime time.Time) error {
	ts := timespecs(atime, mtime)
	return a.inParent(p, func(dirfd int, base string) error {
		return unix.UtimesNanoAt(dirfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
	})
}

func (a *applier) mknod(p string, hdr *tar.Header) error {
	m := uint32(hdr.Mode & 0o777)
	switch hdr.Typeflag {
	case tar.TypeChar:
		m |= unix.S_IFCHR
	case tar.TypeBlock:
		m |= unix.S_IFBLK
	default:
		m |= unix.S_IFIFO
	}
	dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	err := a.inParent(p, func(dirfd int, base string) error {
		return unix.Mknodat(dirfd, base, m, dev)
	})
	if err != nil {
		return &os.PathError{Op: "mknod", Path: p, Err: err}
	}
	return nil
}

func fsetxattr(f *os.File, name, value string) error {
	return withFd(f, func(fd int) error { return unix.Fsetxattr(fd, name, []byte(value), 0) })
}

// renameNoReplace moves the staged rootfs to dst, failing if dst appeared
// in the meantime.
func renameNoReplace(src, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		return os.Rename(src, dst)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
	}
	return nil
}
