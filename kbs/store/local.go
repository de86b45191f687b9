package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/spec"
)

// State is what a broker keeps besides resources: RCAR sessions, spent
// admin token ids, the audit trail, policies and reference values. The
// postgres store is one itself (shared by every replica); StateOf gives
// every other store a Local.
type State interface {
	SessionStore
	SettingsStore
}

// Bounds of a Local's tables when LocalOptions leave them 0.
const (
	DefaultMaxChallenges   = 100_000
	DefaultMaxSessions     = 100_000
	DefaultMaxSessionBytes = 64 << 20 // tokens of attested sessions
	maxAuditEvents         = 1024
)

// LocalOptions configure a Local.
type LocalOptions struct {
	// MaxChallenges bounds the challenges (sessions not yet attested) held;
	// past it the oldest are evicted. 0: DefaultMaxChallenges.
	MaxChallenges int
	// MaxSessions and MaxSessionBytes bound the attested sessions' tokens
	// held (count, bytes); past them arbitrary ones go. 0: the defaults.
	MaxSessions     int
	MaxSessionBytes int
	// Dir keeps the settings across restarts (created 0700; files 0600,
	// written atomically). "": memory only.
	Dir string
	// OnEvict, if set, is told how many live challenges were evicted to
	// make room for a new one.
	OnEvict func(n int)
	// Clock is the time source of CreateChallenge. nil: time.Now.
	Clock func() time.Time
}

// Local is the State a broker keeps in its own process, over any Store:
// challenges and attested sessions in bounded tables, policies and
// reference values in memory or in LocalOptions.Dir, admin token ids in the
// Store when it keeps them (fs, memory) else in memory, and the last 1024
// audit records. It passes the same conformance suite as the postgres
// store (storetest.RunSessions, storetest.RunSettings); only one broker
// process can use it.
type Local struct {
	o     LocalOptions
	ids   AdminIDStore
	chals *challengeTable
	sess  *sessionTable

	mu       sync.Mutex // settings, watchers, audit
	set      Settings
	watchers map[int]func()
	nextW    int
	audit    []AuditEvent
}

// StateOf returns s itself when it keeps a State (postgres: o is then
// unused, and o.Dir must be empty), else a new Local over s.
func StateOf(s Store, o LocalOptions) (State, error) {
	if st, ok := s.(State); ok {
		if o.Dir != "" {
			return nil, errors.New("a state directory and a store that keeps policies (postgres) exclude each other: drop --state-dir")
		}
		return st, nil
	}
	return NewLocal(s, o)
}

// Settings files of LocalOptions.Dir.
const (
	stateResourcePolicy    = "resource-policy.rego"
	stateAttestationPolicy = "attestation-policy.json" // {"id":…, "policy":…}
	stateReferenceValues   = "reference-values.json"   // {"name":[values]}
)

type attestationPolicyFile struct {
	ID     string `json:"id"`
	Policy string `json:"policy"`
}

// NewLocal returns a Local over s (nil: admin ids kept in memory), loading
// the settings saved in o.Dir.
func NewLocal(s Store, o LocalOptions) (*Local, error) {
	if o.MaxChallenges <= 0 {
		o.MaxChallenges = DefaultMaxChallenges
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxSessionBytes <= 0 {
		o.MaxSessionBytes = DefaultMaxSessionBytes
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	l := &Local{o: o, chals: newChallengeTable(o.MaxChallenges),
		sess:     &sessionTable{m: map[string]localSession{}, max: o.MaxSessions, maxBytes: o.MaxSessionBytes},
		watchers: map[int]func(){}}
	if ids, ok := s.(AdminIDStore); ok {
		l.ids = ids
	} else {
		l.ids = &memoryIDs{}
	}
	if err := l.load(); err != nil {
		return nil, err
	}
	return l, nil
}

type memoryIDs struct{ a adminIDSet }

func (m *memoryIDs) UseAdminID(_ context.Context, jti string, expires time.Time) error {
	return m.a.use(jti, expires, time.Now())
}

// load reads the settings saved in Dir; a file that does not parse stops
// the broker rather than let it run with defaults.
func (l *Local) load() error {
	dir := l.o.Dir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kbs state dir: %w", err)
	}
	read := func(name string) ([]byte, bool, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return b, err == nil, err
	}
	if b, ok, err := read(stateResourcePolicy); err != nil {
		return err
	} else if ok {
		l.set.ResourcePolicy = string(b)
	}
	if b, ok, err := read(stateAttestationPolicy); err != nil {
		return err
	} else if ok {
		var ap attestationPolicyFile
		if err := json.Unmarshal(b, &ap); err != nil {
			return fmt.Errorf("saved attestation policy: %w", err)
		}
		l.set.AttestationPolicyID, l.set.AttestationPolicy = ap.ID, ap.Policy
	}
	if b, ok, err := read(stateReferenceValues); err != nil {
		return err
	} else if ok {
		if err := json.Unmarshal(b, &l.set.ReferenceValues); err != nil {
			return fmt.Errorf("saved reference values: %w", err)
		}
	}
	return nil
}

// save writes one settings file (l.mu held).
func (l *Local) save(name string, data []byte) error {
	if l.o.Dir == "" {
		return nil
	}
	if err := atomicfile.Write(filepath.Join(l.o.Dir, name), data); err != nil {
		return fmt.Errorf("kbs state not saved: %w", err)
	}
	return nil
}

// LoadSettings returns a copy of the settings.
func (l *Local) LoadSettings(context.Context) (Settings, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.set
	if st.ReferenceValues != nil {
		st.ReferenceValues = make(map[string][]any, len(l.set.ReferenceValues))
		for k, v := range l.set.ReferenceValues {
			st.ReferenceValues[k] = append([]any{}, v...)
		}
	}
	return st, nil
}

// change applies f to the settings under the lock, saves what it returns
// and tells the watchers.
func (l *Local) change(f func(*Settings) (file string, data []byte, err error)) error {
	l.mu.Lock()
	next := l.set
	file, data, err := f(&next)
	if err == nil {
		err = l.save(file, data)
	}
	if err != nil {
		l.mu.Unlock()
		return err
	}
	next.Version++
	l.set = next
	ws := make([]func(), 0, len(l.watchers))
	for _, w := range l.watchers {
		ws = append(ws, w)
	}
	l.mu.Unlock()
	for _, w := range ws {
		w()
	}
	return nil
}

// SetResourcePolicy replaces the resource policy source.
func (l *Local) SetResourcePolicy(_ context.Context, src string) error {
	return l.change(func(s *Settings) (string, []byte, error) {
		s.ResourcePolicy = src
		return stateResourcePolicy, []byte(src), nil
	})
}

// SetAttestationPolicy replaces the attestation policy.
func (l *Local) SetAttestationPolicy(_ context.Context, id, src string) error {
	return l.change(func(s *Settings) (string, []byte, error) {
		s.AttestationPolicyID, s.AttestationPolicy = id, src
		b, err := json.Marshal(attestationPolicyFile{ID: id, Policy: src})
		return stateAttestationPolicy, b, err
	})
}

// SetReferenceValues replaces the named reference values, all or none.
func (l *Local) SetReferenceValues(_ context.Context, values map[string][]any) error {
	return l.change(func(s *Settings) (string, []byte, error) {
		rv := make(map[string][]any, len(s.ReferenceValues)+len(values))
		for k, v := range s.ReferenceValues {
			rv[k] = v
		}
		for k, v := range values {
			rv[k] = append([]any{}, v...)
		}
		s.ReferenceValues = rv
		b, err := json.Marshal(rv)
		return stateReferenceValues, b, err
	})
}

// Watch calls changed once at once (as a store does after connecting)
// and after every change, until ctx ends.
func (l *Local) Watch(ctx context.Context, changed func()) {
	l.mu.Lock()
	id := l.nextW
	l.nextW++
	l.watchers[id] = changed
	l.mu.Unlock()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		delete(l.watchers, id)
		l.mu.Unlock()
	})
	go changed()
}

// Audit keeps the record among the last 1024.
func (l *Local) Audit(_ context.Context, e AuditEvent) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.audit) >= maxAuditEvents {
		l.audit = append(l.audit[:0], l.audit[len(l.audit)-maxAuditEvents/2:]...)
	}
	l.audit = append(l.audit, e)
	return nil
}

// AuditTrail returns the audit records kept, oldest first.
func (l *Local) AuditTrail() []AuditEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]AuditEvent(nil), l.audit...)
}

// UseAdminID spends jti in the store when it keeps admin ids, else here.
func (l *Local) UseAdminID(ctx context.Context, jti string, expires time.Time) error {
	return l.ids.UseAdminID(ctx, jti, expires)
}

// CreateChallenge adds c, evicting the oldest challenges when the table is
// full (never an attested session: they live apart).
func (l *Local) CreateChallenge(_ context.Context, c Challenge, maxPerAddr int) error {
	evicted, err := l.chals.create(c, maxPerAddr, l.o.Clock())
	if evicted > 0 && l.o.OnEvict != nil {
		l.o.OnEvict(evicted)
	}
	return err
}

// PeekChallenge returns a live, unspent challenge.
func (l *Local) PeekChallenge(_ context.Context, id string, now time.Time) (Challenge, error) {
	return l.chals.peek(id, now)
}

// SpendChallenge uses up the challenge's one attempt: one caller wins.
func (l *Local) SpendChallenge(_ context.Context, id string, now time.Time) (Challenge, error) {
	return l.chals.spend(id, now)
}

// PutSession keeps the attested session's token until expires.
func (l *Local) PutSession(_ context.Context, id string, token []byte, expires time.Time) error {
	l.sess.put(id, token, expires, l.o.Clock())
	return nil
}

// GetSession returns a live attested session's token.
func (l *Local) GetSession(_ context.Context, id string, now time.Time) ([]byte, time.Time, error) {
	return l.sess.get(id, now)
}

// Expire drops expired challenges and sessions; it reports how many went.
func (l *Local) Expire(_ context.Context, now time.Time) (int64, error) {
	return int64(l.chals.expire(now) + l.sess.expire(now)), nil
}

// challengeTable holds challenges by creation (so by expiry), bounded in
// number overall and per client address, evicted oldest first. A spent
// challenge stays as a tombstone until it expires or is evicted, so a
// replay is told so; it no longer counts against its address.
type challengeTable struct {
	mu      sync.Mutex
	m       map[string]*challengeEntry
	queue   []*challengeEntry // by creation; nil where taken out early
	head    uint64            // seq of queue[0]
	perAddr map[string]int
	max     int
}

type challengeEntry struct {
	c    Challenge
	used bool
}

func newChallengeTable(max int) *challengeTable {
	return &challengeTable{m: map[string]*challengeEntry{}, perAddr: map[string]int{}, max: max}
}

func (t *challengeTable) create(c Challenge, maxPerAddr int, now time.Time) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropExpired(now)
	if _, dup := t.m[c.ID]; dup {
		return 0, fmt.Errorf("challenge id: %w", spec.ErrExists)
	}
	if t.perAddr[c.Addr] >= maxPerAddr {
		return 0, ErrTooManyPerAddr
	}
	evicted := 0
	for len(t.m) >= t.max && t.popOldest() {
		evicted++
	}
	e := &challengeEntry{c: c}
	t.queue = append(t.queue, e)
	t.m[c.ID] = e
	t.perAddr[c.Addr]++
	return evicted, nil
}

func (t *challengeTable) peek(id string, now time.Time) (Challenge, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	switch {
	case !ok || !now.Before(e.c.Expires):
		return Challenge{}, ErrChallengeUnknown
	case e.used:
		return Challenge{}, ErrChallengeUsed
	}
	return e.c, nil
}

func (t *challengeTable) spend(id string, now time.Time) (Challenge, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	switch {
	case !ok || !now.Before(e.c.Expires):
		return Challenge{}, ErrChallengeUnknown
	case e.used:
		return Challenge{}, ErrChallengeUsed
	}
	e.used = true
	t.release(e)
	return e.c, nil
}

func (t *challengeTable) release(e *challengeEntry) {
	if n := t.perAddr[e.c.Addr] - 1; n > 0 {
		t.perAddr[e.c.Addr] = n
	} else {
		delete(t.perAddr, e.c.Addr)
	}
}

// popOldest removes the oldest queued challenge; false when none is left.
func (t *challengeTable) popOldest() bool {
	for len(t.queue) > 0 {
		e := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		t.head++
		if len(t.queue) == 0 {
			t.queue = nil // let the backing array go
		}
		if e == nil {
			continue
		}
		delete(t.m, e.c.ID)
		if !e.used {
			t.release(e)
		}
		return true
	}
	return false
}

func (t *challengeTable) dropExpired(now time.Time) int {
	n := 0
	for len(t.queue) > 0 && (t.queue[0] == nil || !now.Before(t.queue[0].c.Expires)) {
		if t.queue[0] != nil {
			n++
		}
		t.popOldest()
	}
	return n
}

func (t *challengeTable) expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropExpired(now)
}

func (t *challengeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// sessionTable keeps attested sessions' tokens, bounded in count and
// bytes; when full of live ones an arbitrary eighth goes (their holders
// attest again).
type sessionTable struct {
	mu       sync.Mutex
	m        map[string]localSession
	bytes    int
	max      int
	maxBytes int
}

type localSession struct {
	token   []byte
	expires time.Time
}

func (t *sessionTable) put(id string, token []byte, expires, now time.Time) {
	size := len(id) + len(token)
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.m[id]; ok {
		t.bytes -= len(id) + len(old.token)
		delete(t.m, id)
	}
	full := func() bool { return len(t.m) >= t.max || t.bytes+size > t.maxBytes }
	if full() {
		t.sweep(now)
	}
	for n := len(t.m)/8 + 1; full() && len(t.m) > 0; {
		for k, v := range t.m { // map order is unspecified: an arbitrary choice
			t.del(k, v)
			if n--; n <= 0 {
				break
			}
		}
		n = len(t.m)/8 + 1
	}
	if size > t.maxBytes {
		return
	}
	t.m[id] = localSession{token: append([]byte(nil), token...), expires: expires}
	t.bytes += size
}

func (t *sessionTable) del(k string, v localSession) {
	delete(t.m, k)
	t.bytes -= len(k) + len(v.token)
}

func (t *sessionTable) sweep(now time.Time) int {
	n := 0
	for k, v := range t.m {
		if !now.Before(v.expires) {
			t.del(k, v)
			n++
		}
	}
	return n
}

func (t *sessionTable) expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sweep(now)
}

func (t *sessionTable) get(id string, now time.Time) ([]byte, time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[id]
	if !ok || !now.Before(s.expires) {
		return nil, time.Time{}, fmt.Errorf("session: %w", spec.ErrNotFound)
	}
	return append([]byte(nil), s.token...), s.expires, nil
}
