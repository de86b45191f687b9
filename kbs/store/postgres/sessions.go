package postgres

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/spec"
)

// idHash is what the tables keep of a session cookie: a dump of them
// cannot be turned back into a cookie.
func idHash(id string) []byte {
	h := sha256.Sum256([]byte("coffer-kbs-session\x00" + id))
	return h[:]
}

// CreateChallenge inserts c unless its address holds maxPerAddr live,
// unspent challenges. Replicas racing on one address may together exceed
// the bound by their number; the per-address rate limit still holds.
func (s *Store) CreateChallenge(ctx context.Context, c store.Challenge, maxPerAddr int) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `INSERT INTO kbs_challenges (id_hash, tee, nonce, addr, expires)
		SELECT $1, $2, $3, $4, $5
		WHERE (SELECT count(*) FROM kbs_challenges WHERE addr = $4 AND NOT used AND expires > $6) < $7`,
		idHash(c.ID), c.Tee, c.Nonce, c.Addr, c.Expires, time.Now(), maxPerAddr)
	if err != nil {
		return fmt.Errorf("creating challenge: %w", classify(err))
	}
	if tag.RowsAffected() == 0 {
		return store.ErrTooManyPerAddr
	}
	return nil
}

// PeekChallenge returns a live, unspent challenge.
func (s *Store) PeekChallenge(ctx context.Context, id string, now time.Time) (store.Challenge, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	c := store.Challenge{ID: id}
	var used bool
	err := retryRead(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT tee, nonce, addr, expires, used FROM kbs_challenges WHERE id_hash = $1`, idHash(id)).
			Scan(&c.Tee, &c.Nonce, &c.Addr, &c.Expires, &used)
	})
	switch {
	case noRows(err):
		return c, store.ErrChallengeUnknown
	case err != nil:
		return c, fmt.Errorf("reading challenge: %w", err)
	case !now.Before(c.Expires):
		return c, store.ErrChallengeUnknown
	case used:
		return c, store.ErrChallengeUsed
	}
	return c, nil
}

// SpendChallenge marks the challenge used and returns it; the row lock
// makes exactly one of concurrent callers, on any replica, see its update
// succeed. A live row the update did not change is spent (by an earlier or
// a concurrent call: the second half reads the statement's snapshot, so it
// must not look at the used column).
func (s *Store) SpendChallenge(ctx context.Context, id string, now time.Time) (store.Challenge, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	c := store.Challenge{ID: id}
	var used bool
	err := s.pool.QueryRow(ctx, `WITH spent AS (
			UPDATE kbs_challenges SET used = true WHERE id_hash = $1 AND NOT used AND expires > $2
			RETURNING false AS was_used, tee, nonce, addr, expires)
		SELECT was_used, tee, nonce, addr, expires FROM spent
		UNION ALL SELECT true, '', '', '', expires FROM kbs_challenges
			WHERE id_hash = $1 AND NOT EXISTS (SELECT 1 FROM spent) AND expires > $2`,
		idHash(id), now).Scan(&used, &c.Tee, &c.Nonce, &c.Addr, &c.Expires)
	switch {
	case noRows(err):
		return c, store.ErrChallengeUnknown
	case err != nil:
		return c, fmt.Errorf("spending challenge: %w", classify(err))
	case used:
		return c, store.ErrChallengeUsed
	}
	return c, nil
}

func sessionAAD(h []byte) []byte { return append([]byte("coffer-kbs-session-token\x00"), h...) }

// PutSession stores the attested session's token, encrypted and bound to the session.
func (s *Store) PutSession(ctx context.Context, id string, token []byte, expires time.Time) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	h := idHash(id)
	_, err := s.pool.Exec(ctx, `INSERT INTO kbs_sessions (id_hash, kek_id, sealed, expires) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id_hash) DO UPDATE SET kek_id = excluded.kek_id, sealed = excluded.sealed, expires = excluded.expires`,
		h, s.keys.cur.id, seal(s.keys.cur.session, token, sessionAAD(h)), expires)
	if err != nil {
		return fmt.Errorf("storing session: %w", classify(err))
	}
	return nil
}

// GetSession returns the token and expiry of a live attested session.
func (s *Store) GetSession(ctx context.Context, id string, now time.Time) ([]byte, time.Time, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	h := idHash(id)
	var kekID, sealed []byte
	var exp time.Time
	err := retryRead(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT kek_id, sealed, expires FROM kbs_sessions WHERE id_hash = $1 AND expires > $2`, h, now).Scan(&kekID, &sealed, &exp)
	})
	if noRows(err) {
		return nil, exp, fmt.Errorf("session: %w", spec.ErrNotFound)
	}
	if err != nil {
		return nil, exp, fmt.Errorf("reading session: %w", err)
	}
	tok, err := s.keys.open(true, kekID, sealed, sessionAAD(h))
	return tok, exp, err
}

// UseAdminID records an admin token's jti; a second use wraps spec.ErrExists.
func (s *Store) UseAdminID(ctx context.Context, jti string, expires time.Time) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `INSERT INTO kbs_admin_ids (jti, expires) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING`, jti, expires)
	if err != nil {
		return fmt.Errorf("recording admin token id: %w", classify(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("admin token id: %w", spec.ErrExists)
	}
	return nil
}

// Audit appends an admin audit record.
func (s *Store) Audit(ctx context.Context, e store.AuditEvent) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO kbs_audit (at, actor, action, target, result) VALUES ($1, $2, $3, $4, $5)`,
		e.Time, e.Actor, e.Action, e.Target, e.Result)
	if err != nil {
		return fmt.Errorf("writing audit record: %w", classify(err))
	}
	return nil
}

// AuditLog returns the newest n audit records, newest first.
func (s *Store) AuditLog(ctx context.Context, n int) ([]store.AuditEvent, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT at, actor, action, target, result FROM kbs_audit ORDER BY id DESC LIMIT $1`, n)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var e store.AuditEvent
		if err := rows.Scan(&e.Time, &e.Actor, &e.Action, &e.Target, &e.Result); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, classify(rows.Err())
}

// Expire deletes challenges, sessions and admin token ids that expired
// before now, and reports how many rows went.
func (s *Store) Expire(ctx context.Context, now time.Time) (int64, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var n int64
	for _, q := range []string{
		`DELETE FROM kbs_challenges WHERE expires <= $1`,
		`DELETE FROM kbs_sessions WHERE expires <= $1`,
		`DELETE FROM kbs_admin_ids WHERE expires <= $1`,
	} {
		tag, err := s.pool.Exec(ctx, q, now)
		if err != nil {
			return n, fmt.Errorf("expiring sessions: %w", classify(err))
		}
		n += tag.RowsAffected()
	}
	return n, nil
}
