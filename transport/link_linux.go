package transport

import "golang.org/x/sys/unix"

// linkFollow hard-links src at dst, following src if it is a symlink: a
// /proc/self/fd/N link to an unnamed (O_TMPFILE) file gives it the name.
func linkFollow(src, dst string) error {
	return unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
}
