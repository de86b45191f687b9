package transport

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// An unnamed (O_TMPFILE) staged blob gets its name in the layout through
// its /proc/self/fd link: linked, not copied.
func TestLinkFollowNamesAnUnnamedFile(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Skipf("no O_TMPFILE here: %v", err)
	}
	f := os.NewFile(uintptr(fd), "unnamed")
	defer f.Close()
	if _, err := f.WriteString("blob"); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "blob")
	if err := linkFollow(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), dst); err != nil {
		t.Fatal(err)
	}
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(dst, &b) != nil || a.Ino != b.Ino {
		t.Fatalf("dst is not the staged file's inode (%d vs %d)", a.Ino, b.Ino)
	}
}
