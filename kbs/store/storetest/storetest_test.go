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
	st := state(t, store.NewMemory(), "")
	t.Run("Sessions", func(t *testing.T) { storetest.RunSessions(t, st) })
	t.Run("Settings", func(t *testing.T) { storetest.RunSettings(t, st) })
}

// state is the store.State a broker keeps over s (a store.Local).
func state(t *testing.T, s store.Store, dir string) store.State {
	t.Helper()
	st, err := store.StateOf(s, store.LocalOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*store.Local); !ok {
		t.Fatalf("StateOf(%T) = %T, want a *store.Local", s, st)
	}
	return st
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
	stateDir := filepath.Join(t.TempDir(), "state")
	st := state(t, fs, stateDir)
	t.Run("Sessions", func(t *testing.T) { storetest.RunSessions(t, st) })
	t.Run("Settings", func(t *testing.T) { storetest.RunSettings(t, st) })
	// The settings outlive the process in the state directory; spent admin
	// ids, kept by the fs store, too.
	want, _ := st.LoadSettings(t.Context())
	again := state(t, open(t), stateDir)
	got, err := again.LoadSettings(t.Context())
	if err != nil || got.ResourcePolicy != want.ResourcePolicy || got.AttestationPolicy != want.AttestationPolicy || len(got.ReferenceValues) != len(want.ReferenceValues) {
		t.Fatalf("settings after reopening: %+v, %v; want %+v", got, err, want)
	}
	if err := again.UseAdminID(t.Context(), "jti-1", time.Now().Add(time.Minute)); !errors.Is(err, spec.ErrExists) {
		t.Fatalf("admin id spent through the state, after reopening: got %v, want ErrExists", err)
	}
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
