package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// migrations are the schema versions, in order: migrations[i] takes the
// schema from version i to i+1. Never edit a released one; append.
//
// Challenges and sessions are UNLOGGED: they live minutes, writing them to
// the WAL would double each handshake's disk traffic, and after a database
// crash (which empties unlogged tables) clients simply attest again. A clean
// restart keeps them.
var migrations = []string{
	// 1: everything the broker keeps.
	`CREATE TABLE kbs_resources (
		path      text PRIMARY KEY,
		kek_id    bytea NOT NULL,
		sealed    bytea NOT NULL,
		size      bigint NOT NULL,
		modified  timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE kbs_settings (
		kind      text PRIMARY KEY CHECK (kind IN ('resource-policy', 'attestation-policy')),
		policy_id text NOT NULL DEFAULT '',
		body      text NOT NULL,
		modified  timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE kbs_reference_values (
		name      text PRIMARY KEY,
		vals      jsonb NOT NULL,
		modified  timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE kbs_settings_version (
		one       boolean PRIMARY KEY DEFAULT true CHECK (one),
		version   bigint NOT NULL
	);
	INSERT INTO kbs_settings_version VALUES (true, 0);
	CREATE UNLOGGED TABLE kbs_challenges (
		id_hash   bytea PRIMARY KEY,
		tee       text NOT NULL,
		nonce     text NOT NULL,
		addr      text NOT NULL,
		expires   timestamptz NOT NULL,
		used      boolean NOT NULL DEFAULT false
	);
	CREATE INDEX kbs_challenges_addr ON kbs_challenges (addr) WHERE NOT used;
	CREATE INDEX kbs_challenges_expires ON kbs_challenges (expires);
	CREATE UNLOGGED TABLE kbs_sessions (
		id_hash   bytea PRIMARY KEY,
		kek_id    bytea NOT NULL,
		sealed    bytea NOT NULL,
		expires   timestamptz NOT NULL
	);
	CREATE INDEX kbs_sessions_expires ON kbs_sessions (expires);
	CREATE TABLE kbs_admin_ids (
		jti       text PRIMARY KEY,
		expires   timestamptz NOT NULL
	);
	CREATE INDEX kbs_admin_ids_expires ON kbs_admin_ids (expires);
	CREATE TABLE kbs_audit (
		id        bigserial PRIMARY KEY,
		at        timestamptz NOT NULL,
		actor     text NOT NULL,
		action    text NOT NULL,
		target    text NOT NULL,
		result    text NOT NULL
	);`,
}

// SchemaVersion is the schema version this build reads and writes.
func SchemaVersion() int { return len(migrations) }

// migrationLock is the advisory lock key Migrate holds ("coffer kbs").
const migrationLock = 0x636f66666572_6b62

// MigrateResult says what Migrate did.
type MigrateResult struct {
	From, To int
}

// Migrate creates or upgrades the schema of the database at dbURL to
// SchemaVersion, in one transaction under an advisory lock, so concurrent
// runs (every replica's init container) are safe and a second run changes
// nothing. A schema newer than this build is an error.
func Migrate(ctx context.Context, dbURL string) (MigrateResult, error) {
	cfg, err := poolConfig(dbURL, options{statementTimeout: time.Minute})
	if err != nil {
		return MigrateResult{}, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", Redact(dbURL), classify(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var res MigrateResult
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS kbs_schema_migrations (
			version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM kbs_schema_migrations`).Scan(&res.From); err != nil {
			return err
		}
		res.To = res.From
		if res.From > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this coffer's (%d): upgrade coffer, do not downgrade the database", res.From, len(migrations))
		}
		for v := res.From; v < len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("schema version %d: %w", v+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO kbs_schema_migrations (version) VALUES ($1)`, v+1); err != nil {
				return err
			}
			res.To = v + 1
		}
		return nil
	})
	if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", Redact(dbURL), classify(err))
	}
	return res, nil
}

// checkSchema refuses a database this build cannot use.
func (s *Store) checkSchema(ctx context.Context) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var v int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM kbs_schema_migrations`).Scan(&v)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		v, err = 0, nil
	}
	if err != nil {
		return classify(err)
	}
	switch {
	case v == 0:
		return errors.New("database has no coffer kbs schema: run `coffer kbs migrate --store URL` first")
	case v < len(migrations):
		return fmt.Errorf("database schema version %d is older than this coffer's (%d): run `coffer kbs migrate --store URL`", v, len(migrations))
	case v > len(migrations):
		return fmt.Errorf("database schema version %d is newer than this coffer's (%d): upgrade this replica", v, len(migrations))
	}
	return nil
}
