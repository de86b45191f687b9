package wls

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
)

// Store keeps signed flavors and image associations in a directory:
// flavors/<uuid>.json holds a signed flavor document exactly as it was
// verified, images/<uuid>.json an Image. Files are written atomically
// (0600) through an os.Root, so no name leaves the directory.
type Store struct {
	mu   sync.RWMutex
	root *os.Root
}

// OpenStore opens (creating) the store in dir.
func OpenStore(dir string) (*Store, error) {
	for _, d := range []string{dir, dir + "/flavors", dir + "/images"} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("wls store: %w", err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("wls store: %w", err)
	}
	return &Store{root: root}, nil
}

// Close releases the directory.
func (s *Store) Close() error { return s.root.Close() }

func (s *Store) read(name string, max int64) ([]byte, error) {
	f, err := s.root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, spec.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s exceeds %d bytes", name, max)
	}
	return b, err
}

func (s *Store) write(name string, data []byte) error {
	return atomicfile.WriteIn(s.root, name, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// PutFlavor stores a verified signed flavor document under id,
// create-only: an id already stored fails with spec.ErrExists (replacing
// is ReplaceFlavor, an explicit admin verb).
func (s *Store) PutFlavor(id string, doc []byte) error {
	if !flavor.ValidID(id) {
		return fmt.Errorf("flavor id %q: %w", id, spec.ErrUnsupported)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := atomicfile.WriteIn(s.root, "flavors/"+id+".json", func(w io.Writer) error { _, err := w.Write(doc); return err }, atomicfile.NoReplace())
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("flavor %s is already stored: %w", id, spec.ErrExists)
	}
	return err
}

// ReplaceFlavor replaces the stored flavor id (which must exist) with doc.
func (s *Store) ReplaceFlavor(id string, doc []byte) error {
	if !flavor.ValidID(id) {
		return fmt.Errorf("flavor id %q: %w", id, spec.ErrUnsupported)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.root.Stat("flavors/" + id + ".json"); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("flavor %s: %w", id, spec.ErrNotFound)
	}
	return s.write("flavors/"+id+".json", doc)
}

// adminIDsFile keeps the spent admin-token ids (jti → expiry, Unix s).
const adminIDsFile = "admin-ids.json"

// maxAdminIDs bounds the spent ids kept (each lives ≤ 2 h).
const maxAdminIDs = 100_000

// SpendAdminID records admin-token id as used until exp (Unix seconds),
// on disk before it returns, so a restart does not make the token
// usable again. It fails with spec.ErrExists when id was already spent.
func (s *Store) SpendAdminID(id string, exp int64, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := map[string]int64{}
	b, err := s.read(adminIDsFile, 16<<20)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &ids); err != nil {
			return fmt.Errorf("%s unreadable: %w", adminIDsFile, err)
		}
	case !errors.Is(err, spec.ErrNotFound):
		return err
	}
	for k, e := range ids {
		if now.Unix() >= e {
			delete(ids, k)
		}
	}
	if _, seen := ids[id]; seen {
		return fmt.Errorf("admin token id already used: %w", spec.ErrExists)
	}
	if len(ids) >= maxAdminIDs {
		return fmt.Errorf("%d live admin-token ids recorded: wait for some to expire", len(ids))
	}
	ids[id] = exp
	out, _ := json.Marshal(ids)
	return s.write(adminIDsFile, out)
}

// Flavor returns the signed flavor document id, or spec.ErrNotFound.
func (s *Store) Flavor(id string) ([]byte, error) {
	if !flavor.ValidID(id) {
		return nil, fmt.Errorf("flavor %q: %w", id, spec.ErrNotFound)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, err := s.read("flavors/"+id+".json", flavor.MaxSignedFlavor)
	if errors.Is(err, spec.ErrNotFound) {
		return nil, fmt.Errorf("flavor %s: %w", id, spec.ErrNotFound)
	}
	return b, err
}

// FlavorIDs lists the stored flavors.
func (s *Store) FlavorIDs() ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, err := s.root.Open("flavors")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range names {
		if id, ok := strings.CutSuffix(n, ".json"); ok && flavor.ValidID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// PutImage stores an image association.
func (s *Store) PutImage(img Image, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write("images/"+img.ID+".json", data)
}

// ImageData returns the stored image association id, or spec.ErrNotFound.
func (s *Store) ImageData(id string) ([]byte, error) {
	if !flavor.ValidID(id) {
		return nil, fmt.Errorf("image %q: %w", id, spec.ErrNotFound)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, err := s.read("images/"+id+".json", maxBody)
	if errors.Is(err, spec.ErrNotFound) {
		return nil, fmt.Errorf("image %s: %w", id, spec.ErrNotFound)
	}
	return b, err
}
