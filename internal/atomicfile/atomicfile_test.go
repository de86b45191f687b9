package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	if err := Write(p, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("default mode %v, want 0600", st.Mode().Perm())
	}
	// Replacing keeps nothing of the old file, its mode included.
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode after replace %v, want 0600", st.Mode().Perm())
	}
	if err := Write(p+".pub", []byte("pub"), Mode(0o644)); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p + ".pub"); st.Mode().Perm() != 0o644 {
		t.Fatalf("Mode(0644): %v", st.Mode().Perm())
	}
	// NoReplace refuses an existing name and changes nothing.
	if err := Write(p, []byte("three"), NoReplace()); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("NoReplace over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content after refused write %q", b)
	}
	if err := Write(filepath.Join(dir, "new"), []byte("n"), NoReplace()); err != nil {
		t.Fatal(err)
	}
	// A failing fill leaves neither the file nor a temp file.
	err := WriteFunc(filepath.Join(dir, "half"), func(w io.Writer) error {
		_, _ = w.Write([]byte("partial"))
		return errors.New("source gone")
	})
	if err == nil {
		t.Fatal("a failed fill committed")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "key.pem" && e.Name() != "key.pem.pub" && e.Name() != "new" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
