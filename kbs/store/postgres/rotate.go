package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// RotateResult says what RotateKEK changed.
type RotateResult struct {
	Resealed int // resources moved to the current KEK
	Current  int // resources already under it
	Sessions int // attested sessions under another KEK, dropped (their clients attest again)
}

// RotateKEK re-seals every resource under the store's current KEK, in one
// transaction holding the rows, and drops attested sessions sealed under
// another KEK. Every resource must open with the current or the previous
// KEK (WithPreviousKEK), else nothing changes. Values stay the same, so
// replicas' caches stay valid; replicas still running with only the old
// KEK cannot open resealed values: roll them to the new KEK (with the old
// one as previous) before rotating. Rerunning it changes nothing more.
func (s *Store) RotateKEK(ctx context.Context) (RotateResult, error) {
	var res RotateResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT path, kek_id, sealed FROM kbs_resources ORDER BY path FOR UPDATE`)
		if err != nil {
			return err
		}
		type row struct {
			path         string
			kekID, value []byte
		}
		var todo []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.path, &r.kekID, &r.value); err != nil {
				rows.Close()
				return err
			}
			if bytes.Equal(r.kekID, s.keys.cur.id) {
				res.Current++
				continue
			}
			todo = append(todo, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range todo {
			p, err := protocol.ParseResourcePath(r.path)
			if err != nil {
				return fmt.Errorf("stored resource path %q: %w", r.path, err)
			}
			pt, err := s.keys.open(false, r.kekID, r.value, resourceAAD(p))
			if err != nil {
				return fmt.Errorf("resource %s: %w (give the KEK it is sealed under as the previous KEK)", r.path, err)
			}
			_, err = tx.Exec(ctx, `UPDATE kbs_resources SET kek_id = $2, sealed = $3 WHERE path = $1`,
				r.path, s.keys.cur.id, seal(s.keys.cur.resource, pt, resourceAAD(p)))
			clear(pt)
			if err != nil {
				return err
			}
			res.Resealed++
		}
		tag, err := tx.Exec(ctx, `DELETE FROM kbs_sessions WHERE kek_id <> $1`, s.keys.cur.id)
		if err != nil {
			return err
		}
		res.Sessions = int(tag.RowsAffected())
		return nil
	})
	if err != nil {
		if errors.Is(err, errWrongKEK) {
			return RotateResult{}, fmt.Errorf("rotating the store kek, nothing changed: %w", err)
		}
		return RotateResult{}, fmt.Errorf("rotating the store kek, nothing changed: %w", classify(err))
	}
	return res, nil
}
