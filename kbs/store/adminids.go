package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/spec"
)

// adminIDSet is the spent-id table of the memory store (and the fs store's
// count of live ids): jti → expiry, expired entries swept when full.
type adminIDSet struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (a *adminIDSet) use(jti string, expires, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]time.Time{}
	}
	if exp, ok := a.m[jti]; ok && now.Before(exp) {
		return fmt.Errorf("admin token id: %w", spec.ErrExists)
	}
	if len(a.m) >= MaxLiveAdminIDs {
		for k, exp := range a.m {
			if !now.Before(exp) {
				delete(a.m, k)
			}
		}
		if len(a.m) >= MaxLiveAdminIDs {
			return ErrTooManyAdminIDs
		}
	}
	a.m[jti] = expires
	return nil
}

// UseAdminID spends jti until expires, for the lifetime of the store.
func (s *Memory) UseAdminID(_ context.Context, jti string, expires time.Time) error {
	return s.ids.use(jti, expires, time.Now())
}

// adminIDDir holds the fs store's spent admin token ids: one file per id,
// named by the id's SHA-256 (ids are caller-chosen strings) and holding
// its expiry in Unix seconds. A leading '.' is outside the resource-path
// grammar, so no resource can name it and List skips it.
const adminIDDir = ".admin-ids"

// UseAdminID spends jti until expires in the repository directory, so a
// token used once is refused after a broker restart too. The id file is
// created without replacing (hard link of a synced temp file), which is the
// atomic test-and-set; an expired one left over is swept and reused.
func (s *FS) UseAdminID(ctx context.Context, jti string, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.idLive < 0 || s.idLive >= MaxLiveAdminIDs || now.Sub(s.idSwept) > time.Hour {
		if err := s.sweepAdminIDs(now); err != nil {
			return err
		}
		if s.idLive >= MaxLiveAdminIDs {
			return ErrTooManyAdminIDs
		}
	}
	sum := sha256.Sum256([]byte(jti))
	name := adminIDDir + "/" + hex.EncodeToString(sum[:])
	write := func() error {
		return atomicfile.WriteIn(s.root, name, func(w io.Writer) error {
			_, err := io.WriteString(w, strconv.FormatInt(expires.Unix(), 10))
			return err
		}, atomicfile.Mode(0o600), atomicfile.NoReplace())
	}
	if err := s.root.MkdirAll(adminIDDir, 0o700); err != nil {
		return fmt.Errorf("admin token ids: %w: %w", ErrUnavailable, err)
	}
	err := write()
	if errors.Is(err, fs.ErrExist) {
		if exp, ok := s.adminIDExpiry(name); ok && !now.Before(exp) {
			// A leftover of an expired token: the id is free again.
			if err := s.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("admin token ids: %w: %w", ErrUnavailable, err)
			}
			err = write()
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("admin token id: %w", spec.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("admin token ids: %w: %w", ErrUnavailable, err)
	}
	s.idLive++
	return nil
}

// adminIDExpiry reads an id file's expiry; unreadable: not expired.
func (s *FS) adminIDExpiry(name string) (time.Time, bool) {
	f, err := s.root.Open(name)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}

// sweepAdminIDs removes the files of expired ids and counts the rest.
func (s *FS) sweepAdminIDs(now time.Time) error {
	live := 0
	ents, err := fs.ReadDir(s.root.FS(), adminIDDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin token ids: %w: %w", ErrUnavailable, err)
	}
	for _, e := range ents {
		name := adminIDDir + "/" + e.Name()
		if exp, ok := s.adminIDExpiry(name); ok && !now.Before(exp) {
			_ = s.root.Remove(name)
			continue
		}
		live++
	}
	s.idLive, s.idSwept = live, now
	return nil
}
