package atomicfile_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/internal/atomicfile"
)

// Unlinked: the file has no name while fill runs; a failed fill leaves
// nothing; success replaces the old file with the given mode; NoReplace
// refuses an existing name.
func TestUnlinked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	entries := func() int { es, _ := os.ReadDir(dir); return len(es) }
	err := atomicfile.WriteFunc(p, func(w io.Writer) error {
		io.WriteString(w, "partial")
		if n := entries(); n != 0 {
			t.Errorf("%d names in the directory while writing, want 0", n)
		}
		return errors.New("boom")
	}, atomicfile.Unlinked())
	if err == nil || entries() != 0 {
		t.Fatalf("failed fill: err %v, %d entries left", err, entries())
	}
	os.WriteFile(p, []byte("old"), 0o600)
	if err := atomicfile.Write(p, []byte("new"), atomicfile.Unlinked(), atomicfile.Mode(0o640)); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if b, _ := os.ReadFile(p); string(b) != "new" || fi.Mode().Perm() != 0o640 || entries() != 1 {
		t.Errorf("replace: %q mode %v, %d entries", b, fi.Mode().Perm(), entries())
	}
	if err := atomicfile.Write(p, []byte("x"), atomicfile.Unlinked(), atomicfile.NoReplace()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("NoReplace over an existing file: %v", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "fresh"), []byte("y"), atomicfile.Unlinked(), atomicfile.NoReplace()); err != nil || entries() != 2 {
		t.Errorf("NoReplace to a fresh name: %v, %d entries", err, entries())
	}
}
