package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dev/coffer/kbs/store"
)

const (
	kindResourcePolicy    = "resource-policy"
	kindAttestationPolicy = "attestation-policy"
)

// LoadSettings reads the policies and reference values in one snapshot.
func (s *Store) LoadSettings(ctx context.Context) (store.Settings, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var st store.Settings
	err := retryRead(ctx, func(ctx context.Context) error {
		st = store.Settings{ReferenceValues: map[string][]any{}}
		return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT version FROM kbs_settings_version`).Scan(&st.Version); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT kind, policy_id, body FROM kbs_settings`)
			if err != nil {
				return err
			}
			for rows.Next() {
				var kind, id, body string
				if err := rows.Scan(&kind, &id, &body); err != nil {
					rows.Close()
					return err
				}
				switch kind {
				case kindResourcePolicy:
					st.ResourcePolicy = body
				case kindAttestationPolicy:
					st.AttestationPolicyID, st.AttestationPolicy = id, body
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			rows, err = tx.Query(ctx, `SELECT name, vals FROM kbs_reference_values`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var name string
				var raw []byte
				if err := rows.Scan(&name, &raw); err != nil {
					return err
				}
				var vs []any
				if err := json.Unmarshal(raw, &vs); err != nil {
					return fmt.Errorf("reference value %q: %w", name, err)
				}
				st.ReferenceValues[name] = vs
			}
			return rows.Err()
		})
	})
	if err != nil {
		return store.Settings{}, fmt.Errorf("loading settings: %w", err)
	}
	return st, nil
}

// change runs f and bumps the settings version in one transaction, and
// notifies every replica when it commits.
func (s *Store) change(ctx context.Context, what string, f func(pgx.Tx) error) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := f(tx); err != nil {
			return err
		}
		var v int64
		if err := tx.QueryRow(ctx, `UPDATE kbs_settings_version SET version = version + 1 RETURNING version`).Scan(&v); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, fmt.Sprint(v))
		return err
	})
	if err != nil {
		return fmt.Errorf("storing %s: %w", what, classify(err))
	}
	return nil
}

func (s *Store) setPolicy(ctx context.Context, kind, id, src string) error {
	return s.change(ctx, kind, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO kbs_settings (kind, policy_id, body, modified) VALUES ($1, $2, $3, now())
			ON CONFLICT (kind) DO UPDATE SET policy_id = excluded.policy_id, body = excluded.body, modified = excluded.modified`, kind, id, src)
		return err
	})
}

// SetResourcePolicy stores the resource policy source.
func (s *Store) SetResourcePolicy(ctx context.Context, src string) error {
	return s.setPolicy(ctx, kindResourcePolicy, "", src)
}

// SetAttestationPolicy stores the attestation policy and its id.
func (s *Store) SetAttestationPolicy(ctx context.Context, id, src string) error {
	return s.setPolicy(ctx, kindAttestationPolicy, id, src)
}

// SetReferenceValues replaces the named reference values, all in one transaction.
func (s *Store) SetReferenceValues(ctx context.Context, values map[string][]any) error {
	return s.change(ctx, "reference values", func(tx pgx.Tx) error {
		for name, vs := range values {
			if vs == nil {
				vs = []any{}
			}
			raw, err := json.Marshal(vs)
			if err != nil {
				return fmt.Errorf("reference value %q: %w", name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO kbs_reference_values (name, vals, modified) VALUES ($1, $2, now())
				ON CONFLICT (name) DO UPDATE SET vals = excluded.vals, modified = excluded.modified`, name, raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// Watch calls changed for every settings change any replica makes (a
// NOTIFY on NotifyChannel, heard by the store's listener connection), after
// every reconnection of that listener (changes made meanwhile were
// missed), and once now, until ctx ends.
func (s *Store) Watch(ctx context.Context, changed func()) {
	s.listen.add(ctx, changed)
	changed()
}
