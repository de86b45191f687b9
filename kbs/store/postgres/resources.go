package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/spec"
)

func resourceAAD(p store.ResourcePath) []byte { return []byte("coffer-kbs-resource\x00" + p.String()) }

// Get decrypts the resource at p.
func (s *Store) Get(ctx context.Context, p store.ResourcePath) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	path := p.String()
	v, gen, ok := s.cache.get(path)
	if ok {
		return v, nil
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	var kekID, sealed []byte
	err := retryRead(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT kek_id, sealed FROM kbs_resources WHERE path = $1`, p.String()).Scan(&kekID, &sealed)
	})
	if noRows(err) {
		return nil, fmt.Errorf("resource %s: %w", p, spec.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading resource %s: %w", p, err)
	}
	pt, err := s.keys.open(false, kekID, sealed, resourceAAD(p))
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", p, err)
	}
	s.cache.put(path, pt, gen)
	return pt, nil
}

// Set stores data at p, replacing what was there. It returns only after
// the transaction committed (synchronous_commit of the database applies).
func (s *Store) Set(ctx context.Context, p store.ResourcePath, data []byte) error {
	if err := p.Validate(); err != nil {
		return err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	sealed := seal(s.keys.cur.resource, data, resourceAAD(p))
	defer s.cache.evict(p.String())
	_, err := s.pool.Exec(ctx, `WITH w AS (
			INSERT INTO kbs_resources (path, kek_id, sealed, size, modified) VALUES ($1, $2, $3, $4, now())
			ON CONFLICT (path) DO UPDATE SET kek_id = excluded.kek_id, sealed = excluded.sealed, size = excluded.size, modified = excluded.modified
			RETURNING path)
		SELECT pg_notify($5, path) FROM w`,
		p.String(), s.keys.cur.id, sealed, len(data), ResourceChannel)
	if err != nil {
		return fmt.Errorf("writing resource %s: %w", p, classify(err))
	}
	return nil
}

// Create stores data at p unless a resource is there (spec.ErrExists).
func (s *Store) Create(ctx context.Context, p store.ResourcePath, data []byte) error {
	if err := p.Validate(); err != nil {
		return err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	sealed := seal(s.keys.cur.resource, data, resourceAAD(p))
	defer s.cache.evict(p.String())
	tag, err := s.pool.Exec(ctx, `WITH w AS (
			INSERT INTO kbs_resources (path, kek_id, sealed, size) VALUES ($1, $2, $3, $4) ON CONFLICT (path) DO NOTHING RETURNING path)
		SELECT pg_notify($5, path) FROM w`,
		p.String(), s.keys.cur.id, sealed, len(data), ResourceChannel)
	if err != nil {
		return fmt.Errorf("writing resource %s: %w", p, classify(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("resource %s: %w", p, spec.ErrExists)
	}
	return nil
}

// Delete removes the resource at p.
func (s *Store) Delete(ctx context.Context, p store.ResourcePath) error {
	if err := p.Validate(); err != nil {
		return err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	defer s.cache.evict(p.String())
	tag, err := s.pool.Exec(ctx, `WITH d AS (DELETE FROM kbs_resources WHERE path = $1 RETURNING path) SELECT pg_notify($2, path) FROM d`,
		p.String(), ResourceChannel)
	if err != nil {
		return fmt.Errorf("deleting resource %s: %w", p, classify(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("resource %s: %w", p, spec.ErrNotFound)
	}
	return nil
}

// MaxList bounds how many resources List returns.
const MaxList = 100_000

// List describes the resources (path, size, modification time), sorted by path.
func (s *Store) List(ctx context.Context) ([]store.ResourceInfo, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var out []store.ResourceInfo
	err := retryRead(ctx, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `SELECT path, size, modified FROM kbs_resources ORDER BY path COLLATE "C" LIMIT $1`, MaxList)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ri store.ResourceInfo
			var mod time.Time
			if err := rows.Scan(&ri.Path, &ri.Size, &mod); err != nil {
				return err
			}
			ri.Modified = mod.UTC()
			out = append(out, ri)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("listing resources: %w", err)
	}
	store.SortInfos(out)
	return out, nil
}
