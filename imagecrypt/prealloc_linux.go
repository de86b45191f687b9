package imagecrypt

import (
	"os"

	"golang.org/x/sys/unix"
)

// preallocate reserves size bytes for a staged layer, so the file system
// allocates its blocks once instead of on every write (best effort).
func preallocate(f *os.File, size int64) {
	if size > 0 {
		_ = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, size)
	}
}
