package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func stores(t *testing.T) map[string]Store {
	fs, err := NewFS(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return map[string]Store{"memory": NewMemory(), "fs": fs}
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			p := rp("default", "image_key", "nginx")
			if _, err := s.Get(ctx, p); !errors.Is(err, spec.ErrNotFound) {
				t.Fatalf("Get missing: got %v, want ErrNotFound", err)
			}
			if err := s.Set(ctx, p, []byte("k1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Set(ctx, p, []byte("key-2")); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, p)
			if err != nil || string(got) != "key-2" {
				t.Fatalf("Get: got %q, %v; want key-2", got, err)
			}
			if err := s.Delete(ctx, p); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, p); !errors.Is(err, spec.ErrNotFound) {
				t.Fatalf("Delete twice: got %v, want ErrNotFound", err)
			}
			if _, err := s.Get(ctx, p); !errors.Is(err, spec.ErrNotFound) {
				t.Fatalf("Get deleted: got %v, want ErrNotFound", err)
			}
		})
	}
}

func TestStoreRejectsTraversal(t *testing.T) {
	ctx := context.Background()
	bad := []ResourcePath{
		rp("..", "x", "y"), rp("a", "..", "y"), rp("a", "b", ".."), rp("a", "b", "../../etc/passwd"),
		rp("a", "b", "%2e%2e"), rp("a", "b", "c/d"), rp("", "b", "c"), rp("a", "b", ".hidden"), rp("a", "b", "c\\d"),
	}
	for name, s := range stores(t) {
		for _, p := range bad {
			if err := s.Set(ctx, p, []byte("x")); !errors.Is(err, spec.ErrUnsupported) {
				t.Errorf("%s Set(%q): got %v, want ErrUnsupported", name, p, err)
			}
			if _, err := s.Get(ctx, p); !errors.Is(err, spec.ErrUnsupported) {
				t.Errorf("%s Get(%q): got %v, want ErrUnsupported", name, p, err)
			}
			if err := s.Delete(ctx, p); !errors.Is(err, spec.ErrUnsupported) {
				t.Errorf("%s Delete(%q): got %v, want ErrUnsupported", name, p, err)
			}
		}
	}
}

func TestFSLayoutAndModes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Seed workflow: a key written by hand is served.
	if err := os.MkdirAll(filepath.Join(dir, "default", "image_key"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "default", "image_key", "hand"), []byte("by hand"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, rp("default", "image_key", "hand"))
	if err != nil || string(got) != "by hand" {
		t.Fatalf("Get hand-written: got %q, %v", got, err)
	}
	p := rp("repo1", "type1", "tag1")
	if err := s.Set(ctx, p, []byte("v")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "repo1", "type1", "tag1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Fatalf("mode: got %v, want %v", got, want)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "repo1", "type1"))
	if len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
}

func TestFSSymlinkEscape(t *testing.T) {
	ctx := context.Background()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "default"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "default", "evil")); err != nil {
		t.Fatal(err)
	}
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get(ctx, rp("default", "evil", "secret")); err == nil {
		t.Fatalf("read through symlink escaping the repository: got %q", got)
	}
	if err := s.Set(ctx, rp("default", "evil", "planted"), []byte("x")); err == nil {
		t.Fatal("wrote through symlink escaping the repository")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Fatal("file planted outside the repository")
	}
}

func rp(repo, typ, tag string) ResourcePath { return ResourcePath{Repo: repo, Type: typ, Tag: tag} }

// Create never replaces: of many concurrent creates exactly one wins, and
// the stored value is the winner's.
func TestStoreCreate(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			p := rp("default", "image_key", "app")
			const n = 16
			errs := make(chan error, n)
			for i := range n {
				go func() { errs <- s.Create(ctx, p, []byte{byte(i)}) }()
			}
			won := 0
			for range n {
				switch err := <-errs; {
				case err == nil:
					won++
				case !errors.Is(err, spec.ErrExists):
					t.Fatalf("Create: %v, want nil or ErrExists", err)
				}
			}
			if won != 1 {
				t.Fatalf("%d concurrent creates succeeded, want 1", won)
			}
			before, _ := s.Get(ctx, p)
			if err := s.Create(ctx, p, []byte("other")); !errors.Is(err, spec.ErrExists) {
				t.Fatalf("Create over existing: %v", err)
			}
			if after, _ := s.Get(ctx, p); string(after) != string(before) {
				t.Fatalf("value changed by a refused Create: %q → %q", before, after)
			}
			if fs, ok := s.(*FS); ok {
				if left, _ := filepath.Glob(filepath.Join(fs.Dir(), "default", "image_key", ".tmp-*")); len(left) != 0 {
					t.Fatalf("temp files left: %v", left)
				}
			}
		})
	}
}

// TestFSListSkipsWhatGetWouldNotServe: files at the wrong depth, invalid
// names and symlinks are not listed.
func TestFSListSkipsWhatGetWouldNotServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Set(ctx, rp("default", "image_key", "ok"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "toplevel"), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "default", "two-deep"), []byte("x"), 0o600))
	must(os.MkdirAll(filepath.Join(dir, "default", "image_key", "deeper"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "default", "image_key", "deeper", "x"), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "default", "image_key", ".hidden"), []byte("x"), 0o600))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "default", "image_key", "link")))
	infos, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Path != "default/image_key/ok" || infos[0].Size != 1 {
		t.Fatalf("List: got %+v, want only default/image_key/ok", infos)
	}
}
