package storetest_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/store/storetest"
	"github.com/coffer-dev/coffer/spec"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	storetest.Run(t, store.NewMemory())
	storetest.RunAdminIDs(t, store.NewMemory(), nil)
}

func TestFS(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "repo")
	open := func(t *testing.T) *store.FS {
		fs, err := store.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fs.Close() })
		return fs
	}
	fs := open(t)
	storetest.Run(t, fs)
	storetest.RunAdminIDs(t, fs, func(t *testing.T) store.AdminIDStore { return open(t) })
	infos, err := fs.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		if strings.Contains(i.Path, "admin") {
			t.Errorf("List shows %s: spent admin ids are not resources", i.Path)
		}
	}
}

// An id left by an expired token is swept and may be used again (tokens
// are refused once expired anyway; the directory must not grow forever).
func TestFSAdminIDExpires(t *testing.T) {
	t.Parallel()
	fs, err := store.NewFS(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if err := fs.UseAdminID(t.Context(), "old", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := fs.UseAdminID(t.Context(), "old", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("reusing an expired id: %v", err)
	}
	if err := fs.UseAdminID(t.Context(), "old", time.Now().Add(time.Hour)); !errors.Is(err, spec.ErrExists) {
		t.Fatalf("then once more: got %v, want ErrExists", err)
	}
}
