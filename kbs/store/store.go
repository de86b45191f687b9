// Package store keeps the broker's resources (image keys and other secrets)
// behind a small interface, addressed by a validated protocol.ResourcePath.
//
// FS is the default: the trustee repository layout <dir>/<repo>/<type>/<tag>,
// one file per resource, so a key copied into that tree by hand is served.
// Memory is for tests and ephemeral brokers. The postgres subpackage is the
// store several broker replicas share; it is also a State (shared.go:
// sessions, policies). For the fs and memory stores the broker keeps a
// Local (local.go), the same State contract in its own process (all three
// stores keep spent admin token ids). Each kind
// registers a Driver for its URL scheme; Open opens the one a URL names
// (open.go). storetest is the conformance suite all of them pass, State
// included.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// ResourcePath is protocol.ResourcePath: repo/type/tag, each segment
// matching [a-zA-Z0-9_\-]+[a-zA-Z0-9_\-\.]*.
type ResourcePath = protocol.ResourcePath

// DefaultRepositoryDir is the reference broker's repository directory.
const DefaultRepositoryDir = "/opt/confidential-containers/kbs/repository"

// Store holds resources. Every method validates the path first and fails
// with an error wrapping spec.ErrUnsupported on a bad one; Get and Delete
// of a missing resource wrap spec.ErrNotFound; Create of an existing one
// wraps spec.ErrExists and changes nothing. Implementations are safe for
// concurrent use.
type Store interface {
	Get(ctx context.Context, p ResourcePath) ([]byte, error)
	Set(ctx context.Context, p ResourcePath, data []byte) error
	Create(ctx context.Context, p ResourcePath, data []byte) error // atomic: never replaces
	Delete(ctx context.Context, p ResourcePath) error
	// List describes every resource, sorted by path, never with its value.
	List(ctx context.Context) ([]ResourceInfo, error)
}

// Memory is an in-memory Store.
type Memory struct {
	mu  sync.RWMutex
	m   map[ResourcePath][]byte
	mod map[ResourcePath]time.Time
	ids adminIDSet
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{m: map[ResourcePath][]byte{}, mod: map[ResourcePath]time.Time{}}
}

// List describes the resources held.
func (s *Memory) List(context.Context) ([]ResourceInfo, error) {
	s.mu.RLock()
	out := make([]ResourceInfo, 0, len(s.m))
	for p, v := range s.m {
		out = append(out, ResourceInfo{Path: p.String(), Size: int64(len(v)), Modified: s.mod[p]})
	}
	s.mu.RUnlock()
	SortInfos(out)
	return out, nil
}

// Get returns a copy of the resource.
func (s *Memory) Get(_ context.Context, p ResourcePath) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	v, ok := s.m[p]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("resource %s: %w", p, spec.ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

// Set stores a copy of data.
func (s *Memory) Set(_ context.Context, p ResourcePath, data []byte) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.m[p] = append([]byte(nil), data...)
	s.mod[p] = time.Now().UTC()
	s.mu.Unlock()
	return nil
}

// Create stores a copy of data unless the resource exists.
func (s *Memory) Create(_ context.Context, p ResourcePath, data []byte) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[p]; ok {
		return fmt.Errorf("resource %s: %w", p, spec.ErrExists)
	}
	s.m[p] = append([]byte(nil), data...)
	s.mod[p] = time.Now().UTC()
	return nil
}

// Delete removes the resource.
func (s *Memory) Delete(_ context.Context, p ResourcePath) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[p]; !ok {
		return fmt.Errorf("resource %s: %w", p, spec.ErrNotFound)
	}
	delete(s.m, p)
	delete(s.mod, p)
	return nil
}

// FS is a Store over a directory tree <dir>/<repo>/<type>/<tag>. All access
// goes through an os.Root, so neither a crafted path nor a symlink planted
// in the tree can reach outside dir. Writes are atomic (temp file, fsync,
// rename) and files are created 0600, directories 0700.
type FS struct {
	root *os.Root
	dir  string

	idMu    sync.Mutex // UseAdminID (adminids.go)
	idLive  int        // unexpired id files; -1: not counted yet
	idSwept time.Time
}

// NewFS opens (creating if needed, 0700) the repository directory.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating repository %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening repository %s: %w", dir, err)
	}
	return &FS{root: root, dir: dir, idLive: -1}, nil
}

// Dir returns the repository directory.
func (s *FS) Dir() string { return s.dir }

// Close releases the directory handle.
func (s *FS) Close() error { return s.root.Close() }

func rel(p ResourcePath) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	return path.Join(p.Repo, p.Type, p.Tag), nil
}

// Get reads the resource file.
func (s *FS) Get(_ context.Context, p ResourcePath) ([]byte, error) {
	name, err := rel(p)
	if err != nil {
		return nil, err
	}
	f, err := s.root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("resource %s: %w", p, spec.ErrNotFound)
		}
		return nil, fmt.Errorf("reading resource %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading resource %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("resource %s is not a regular file: %w", p, spec.ErrNotFound)
	}
	buf := make([]byte, st.Size())
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("reading resource %s: %w", p, err)
	}
	return buf, nil
}

// Set writes the resource atomically.
func (s *FS) Set(_ context.Context, p ResourcePath, data []byte) error {
	return s.write(p, data, false)
}

// Create writes the resource unless it exists: the staged file is
// hard-linked into place, which fails atomically if the name is taken.
func (s *FS) Create(_ context.Context, p ResourcePath, data []byte) error {
	return s.write(p, data, true)
}

func (s *FS) write(p ResourcePath, data []byte, exclusive bool) error {
	name, err := rel(p)
	if err != nil {
		return err
	}
	if err := s.root.MkdirAll(path.Join(p.Repo, p.Type), 0o700); err != nil {
		return fmt.Errorf("writing resource %s: %w", p, err)
	}
	opts := []atomicfile.Option{atomicfile.Mode(0o600)}
	if exclusive {
		opts = append(opts, atomicfile.NoReplace())
	}
	err = atomicfile.WriteIn(s.root, name, func(w io.Writer) error { _, err := w.Write(data); return err }, opts...)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("resource %s: %w", p, spec.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("writing resource %s: %w", p, err)
	}
	return nil
}

// Delete removes the resource file.
func (s *FS) Delete(_ context.Context, p ResourcePath) error {
	name, err := rel(p)
	if err != nil {
		return err
	}
	if err := s.root.Remove(name); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resource %s: %w", p, spec.ErrNotFound)
		}
		return fmt.Errorf("deleting resource %s: %w", p, err)
	}
	return nil
}

// List walks <dir>/<repo>/<type>/<tag>; entries that are not valid
// resource paths or not regular files are skipped (Get would not serve them).
func (s *FS) List(ctx context.Context) ([]ResourceInfo, error) {
	var out []ResourceInfo
	err := fs.WalkDir(s.root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		depth := 0
		if name != "." {
			depth = 1 + strings.Count(name, "/")
		}
		if d.IsDir() {
			if depth >= 3 || name == adminIDDir {
				return fs.SkipDir
			}
			return nil
		}
		if depth != 3 || !d.Type().IsRegular() {
			return nil
		}
		p, perr := protocol.ParseResourcePath(name)
		if perr != nil || p.Validate() != nil {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, ResourceInfo{Path: p.String(), Size: st.Size(), Modified: st.ModTime().UTC()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing repository %s: %w", s.dir, err)
	}
	SortInfos(out)
	return out, nil
}

// ResourceInfo describes a stored resource: never its value.
type ResourceInfo = protocol.ResourceInfo

// SortInfos sorts by path, the order List returns.
func SortInfos(infos []ResourceInfo) {
	slices.SortFunc(infos, func(a, b ResourceInfo) int { return strings.Compare(a.Path, b.Path) })
}
