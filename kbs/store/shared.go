package store

import (
	"context"
	"errors"
	"time"
)

// The interfaces below make up State, what a broker keeps besides
// resources: challenges, attested sessions, admin token ids, policies and
// reference values. A store shared by several replicas (postgres)
// implements them itself, so a broker over it keeps nothing another
// replica would need. The fs and memory stores implement only
// AdminIDStore; a broker over them keeps a Local (local.go), the same
// contract in its own process (policies optionally in a state directory).

// ErrUnavailable is wrapped by errors that mean the store could not be
// reached or did not answer in time (as opposed to a refused operation): a
// broker answers them with 503 and reports itself not ready.
var ErrUnavailable = errors.New("store unavailable")

// Errors of SessionStore.
var (
	ErrChallengeUsed    = errors.New("challenge already used")
	ErrChallengeUnknown = errors.New("challenge unknown or expired")
	ErrTooManyPerAddr   = errors.New("too many outstanding challenges from this address")
)

// Challenge is an RCAR session that has not attested yet.
type Challenge struct {
	ID      string // the session cookie: a secret, stores keep only its hash
	Tee     string
	Nonce   string
	Addr    string // client address key the per-address bound counts
	Expires time.Time
}

// SessionStore keeps RCAR sessions for every replica.
type SessionStore interface {
	// CreateChallenge adds c unless c.Addr already holds maxPerAddr live,
	// unspent challenges (ErrTooManyPerAddr).
	CreateChallenge(ctx context.Context, c Challenge, maxPerAddr int) error
	// PeekChallenge returns a live, unspent challenge
	// (ErrChallengeUsed, ErrChallengeUnknown).
	PeekChallenge(ctx context.Context, id string, now time.Time) (Challenge, error)
	// SpendChallenge uses up the challenge's one attempt and returns it:
	// across every replica exactly one caller gets no error.
	SpendChallenge(ctx context.Context, id string, now time.Time) (Challenge, error)
	// PutSession records that session id attested and holds token (a
	// bearer credential: stores keep it encrypted) until expires.
	PutSession(ctx context.Context, id string, token []byte, expires time.Time) error
	// GetSession returns the token and expiry of a live attested session
	// (spec.ErrNotFound when none).
	GetSession(ctx context.Context, id string, now time.Time) ([]byte, time.Time, error)
	AdminIDStore
	// Audit appends an admin audit record.
	Audit(ctx context.Context, e AuditEvent) error
}

// AdminIDStore spends the ids (jti) of single-use admin tokens. Every store
// of this package implements it, so a spent id outlives a broker restart
// wherever the store does: Memory keeps ids for its own lifetime, FS in its
// directory, the postgres store in its table, each until the token expires.
type AdminIDStore interface {
	// UseAdminID records the jti of an admin token used for a write; a
	// second use before expires wraps spec.ErrExists.
	UseAdminID(ctx context.Context, jti string, expires time.Time) error
}

// MaxLiveAdminIDs bounds the spent, unexpired admin token ids the memory
// and fs stores hold; past it a write with a new token is refused
// (ErrTooManyAdminIDs) until earlier tokens expire.
const MaxLiveAdminIDs = 100_000

// ErrTooManyAdminIDs: MaxLiveAdminIDs unexpired tokens already spent.
var ErrTooManyAdminIDs = errors.New("too many live admin tokens: sign shorter-lived ones")

// AuditEvent is one admin action.
type AuditEvent struct {
	Time   time.Time
	Actor  string // the admin token's role and jti, or "insecure-admin"
	Action string // e.g. "set-resource"
	Target string // e.g. the resource path
	Result string // "ok" or the refusal
}

// Settings are the admin-set policies and reference values.
type Settings struct {
	ResourcePolicy      string // "" = none set: the broker's initial policy holds
	AttestationPolicyID string
	AttestationPolicy   string // "" = none set
	ReferenceValues     map[string][]any
	Version             int64 // grows with every change
}

// SettingsStore keeps Settings for every replica.
type SettingsStore interface {
	LoadSettings(ctx context.Context) (Settings, error)
	SetResourcePolicy(ctx context.Context, src string) error
	SetAttestationPolicy(ctx context.Context, id, src string) error
	// SetReferenceValues replaces the named reference values, all or none.
	SetReferenceValues(ctx context.Context, values map[string][]any) error
	// Watch calls changed after every settings change by any replica
	// (possibly more often), until ctx ends; it returns at once.
	Watch(ctx context.Context, changed func())
}

// Pinger is a store that can tell whether it is reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}
