package store_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/spec"
)

func TestOpenByScheme(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	for _, tc := range []struct {
		url  string
		p    store.Params
		want string
	}{
		{"memory", store.Params{}, "*store.Memory"},
		{"fs", store.Params{Repository: dir}, "*store.FS " + dir},
		{"", store.Params{Repository: dir}, "*store.FS " + dir},
		{"fs://" + dir + "2", store.Params{Repository: dir}, "*store.FS " + dir + "2"},
	} {
		s, err := store.Open(ctx, tc.url, tc.p)
		if err != nil {
			t.Fatalf("Open(%q): %v", tc.url, err)
		}
		got := "*store.Memory"
		if fs, ok := s.(*store.FS); ok {
			got = "*store.FS " + fs.Dir()
			if _, isCloser := s.(io.Closer); !isCloser {
				t.Errorf("Open(%q): an fs store must be closable", tc.url)
			}
			fs.Close()
		}
		if got != tc.want {
			t.Errorf("Open(%q) = %s, want %s", tc.url, got, tc.want)
		}
	}
	for _, bad := range []string{"fs://host/dir", "fs:relative", "nosuch://x", "mysql://u:secret@h/db"} {
		_, err := store.Open(ctx, bad, store.Params{Repository: dir})
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) = %v, want an error without the password", bad, err)
		}
	}
}

// A store added from outside the package is one Register call: Open then
// reaches it by its scheme, and the scheme is listed.
func TestRegisterAddsAStore(t *testing.T) {
	t.Parallel()
	store.Register("coffer-test", store.Driver{Open: func(_ context.Context, u string, p store.Params) (store.Store, error) {
		if u != "coffer-test://x" || p.MaxConns != 3 {
			return nil, errors.New("driver got the wrong URL or params")
		}
		return store.NewMemory(), nil
	}})
	if !slices.Contains(store.Schemes(), "coffer-test") {
		t.Fatalf("Schemes() = %v, want coffer-test listed", store.Schemes())
	}
	s, err := store.Open(context.Background(), "coffer-test://x", store.Params{MaxConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), store.ResourcePath{Repo: "a", Type: "b", Tag: "c"}); !errors.Is(err, spec.ErrNotFound) {
		t.Fatalf("Get on the registered store: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("a second Register of one scheme did not panic")
		}
	}()
	store.Register("coffer-test", store.Driver{Open: func(context.Context, string, store.Params) (store.Store, error) { return nil, nil }})
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"memory": "memory",
		"postgres://coffer:hunter2@db:5432/kbs?sslmode=verify-full": "postgres://coffer:xxxxx@db:5432/kbs?sslmode=verify-full",
	} {
		if got := store.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
