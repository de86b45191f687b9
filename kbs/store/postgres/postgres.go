// Package postgres is a kbs/store over PostgreSQL (jackc/pgx v5), for a
// broker running as several interchangeable replicas: besides resources it
// keeps what the replicas share — challenges and attested sessions,
// admin-token ids, admin audit, policies and reference values — and tells
// every replica when policies or reference values change (LISTEN/NOTIFY).
//
// Resources and session tokens are encrypted (AES-256-GCM, bound to their
// path or session) under keys derived from a key-encryption key (KEK) the
// replicas are given, so a database dump alone releases no key. Session
// cookies are kept only as SHA-256 hashes.
//
// The schema is versioned: Migrate creates or upgrades it (idempotent, one
// transaction under an advisory lock); Open refuses a database whose schema
// is missing, older or newer than this build's.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-dev/coffer/kbs/store"
)

// Defaults of the options, each overridable in the URL as well
// (pool_max_conns=, options=-c statement_timeout=…, connect_timeout=).
const (
	DefaultMaxConns         = 16
	DefaultStatementTimeout = 5 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	// NotifyChannel is the LISTEN/NOTIFY channel of settings changes.
	NotifyChannel = "coffer_kbs_settings"
)

type options struct {
	kek              []byte
	prevKEK          []byte
	cacheBytes       int
	maxConns         int32
	statementTimeout time.Duration
	logger           *slog.Logger
}

// Option configures Open.
type Option func(*options) error

// WithKEK sets the 32-byte key-encryption key (see LoadKEK). Required.
func WithKEK(kek []byte) Option {
	return func(o *options) error {
		if len(kek) != KEKSize {
			return fmt.Errorf("store kek: %d bytes, want %d", len(kek), KEKSize)
		}
		o.kek = append([]byte(nil), kek...)
		return nil
	}
}

// WithPreviousKEK also opens values sealed under an earlier KEK, while a
// rotation (RotateKEK, `coffer kbs rotate-kek`) moves them to the current
// one. New values are always sealed under the current KEK. Default: none.
func WithPreviousKEK(kek []byte) Option {
	return func(o *options) error {
		if len(kek) != KEKSize {
			return fmt.Errorf("previous store kek: %d bytes, want %d", len(kek), KEKSize)
		}
		o.prevKEK = append([]byte(nil), kek...)
		return nil
	}
}

// WithMaxConns bounds the connection pool. Default: the URL's
// pool_max_conns, else DefaultMaxConns.
func WithMaxConns(n int) Option {
	return func(o *options) error {
		if n <= 0 || n > 1000 {
			return fmt.Errorf("max conns %d: want 1..1000", n)
		}
		o.maxConns = int32(n)
		return nil
	}
}

// WithStatementTimeout sets the server-side statement_timeout of every
// connection; each call also ends at this deadline client-side. Default:
// DefaultStatementTimeout.
func WithStatementTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("statement timeout %v: must be positive", d)
		}
		o.statementTimeout = d
		return nil
	}
}

// DefaultResourceCacheBytes bounds the decrypted resources a replica keeps.
const DefaultResourceCacheBytes = 32 << 20

// WithResourceCache bounds the cache of decrypted resources (0 turns it
// off). A change made through another replica evicts its entry when the
// change notification arrives (milliseconds); while the notification
// connection is down nothing is cached. Default: DefaultResourceCacheBytes.
func WithResourceCache(maxBytes int) Option {
	return func(o *options) error {
		if maxBytes < 0 {
			return fmt.Errorf("resource cache %d bytes: must not be negative", maxBytes)
		}
		o.cacheBytes = maxBytes
		return nil
	}
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// Store is the PostgreSQL store. It implements store.Store,
// store.SessionStore, store.SettingsStore and store.Pinger.
type Store struct {
	pool    *pgxpool.Pool
	o       options
	keys    keyring
	timeout time.Duration
	listen  *listener
	cache   resourceCache
}

var (
	_ store.Store         = (*Store)(nil)
	_ store.SessionStore  = (*Store)(nil)
	_ store.SettingsStore = (*Store)(nil)
	_ store.Pinger        = (*Store)(nil)
)

// IsURL reports whether s names a PostgreSQL database (postgres:// or postgresql://).
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Redact returns u without its password, for logs and errors.
func Redact(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	return pu.Redacted()
}

func poolConfig(dbURL string, o options) (*pgxpool.Config, error) {
	if !IsURL(dbURL) {
		return nil, fmt.Errorf("store %q: want a postgres:// URL", Redact(dbURL))
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		// pgx's message may quote the URL, password included: do not pass it on.
		return nil, fmt.Errorf("store URL %s: cannot be parsed", Redact(dbURL))
	}
	q, _ := url.Parse(dbURL)
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
	} else if q == nil || !q.Query().Has("pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	rp := cfg.ConnConfig.RuntimeParams
	inOptions := strings.Contains(rp["options"], "statement_timeout")
	if _, ok := rp["statement_timeout"]; (!ok && !inOptions) || o.statementTimeout > 0 {
		d := o.statementTimeout
		if d <= 0 {
			d = DefaultStatementTimeout
		}
		rp["statement_timeout"] = fmt.Sprint(d.Milliseconds())
	}
	if _, ok := rp["idle_in_transaction_session_timeout"]; !ok {
		rp["idle_in_transaction_session_timeout"] = "30000"
	}
	rp["application_name"] = "coffer-kbs"
	cfg.HealthCheckPeriod = 5 * time.Second
	return cfg, nil
}

// Open connects to the database at dbURL and checks its schema version. It
// does not create or change the schema: run Migrate (`coffer kbs migrate`).
func Open(ctx context.Context, dbURL string, opts ...Option) (*Store, error) {
	o := options{cacheBytes: DefaultResourceCacheBytes}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("postgres store: %w", err)
		}
	}
	if o.kek == nil {
		return nil, errors.New("postgres store: a key-encryption key is required (--store-kek FILE): resources are encrypted in the database")
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	cfg, err := poolConfig(dbURL, o)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", Redact(dbURL), classify(err))
	}
	s := &Store{pool: pool, o: o, keys: keyring{cur: deriveKeys(o.kek)}, timeout: statementTimeout(cfg)}
	if o.prevKEK != nil {
		s.keys.prev = deriveKeys(o.prevKEK)
	}
	s.cache = resourceCache{m: map[string][]byte{}, maxBytes: o.cacheBytes}
	if err := s.checkSchema(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres store %s: %w", Redact(dbURL), err)
	}
	s.startListener()
	return s, nil
}

func statementTimeout(cfg *pgxpool.Config) time.Duration {
	var ms int64
	if _, err := fmt.Sscan(cfg.ConnConfig.RuntimeParams["statement_timeout"], &ms); err != nil || ms <= 0 {
		return DefaultStatementTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

// Close stops the listener and releases the pool.
func (s *Store) Close() error {
	s.listen.stop()
	s.pool.Close()
	return nil
}

// PoolStats reports the connection pool: connections in use, idle, and the bound.
func (s *Store) PoolStats() (acquired, idle, max int32) {
	st := s.pool.Stat()
	return st.AcquiredConns(), st.IdleConns(), st.MaxConns()
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", classify(err))
	}
	return nil
}

// op bounds one call client-side by the statement timeout (plus the
// connection's), so a dead network cannot hold a request forever.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout+DefaultConnectTimeout)
}

// classify wraps errors that mean the database is unreachable or did not
// answer in time with store.ErrUnavailable. A PostgreSQL error answer is
// unavailability only for connection, shutdown, timeout and overload codes.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, cannot connect now
			pe.Code == "57014",                     // query canceled (statement_timeout)
			pe.Code == "53300", pe.Code == "53400": // too many connections
			return fmt.Errorf("%w: %s (SQLSTATE %s)", store.ErrUnavailable, pe.Message, pe.Code)
		}
		return err
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "closed pool") {
		return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	return err
}

// retryRead runs an idempotent read once more after a connection failure:
// after a database restart the pool's first use of a stale connection fails.
func retryRead(ctx context.Context, f func(context.Context) error) error {
	err := f(ctx)
	if err != nil && errors.Is(classify(err), store.ErrUnavailable) && ctx.Err() == nil {
		err = f(ctx)
	}
	return classify(err)
}

func noRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
