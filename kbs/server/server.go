// Package server is coffer's key broker: an http.Handler speaking the
// Confidential Containers KBS protocol 0.4.0 (RCAR: /kbs/v0/auth, /attest,
// /resource/…), its admin API (Ed25519-signed JWTs), /healthz and /metrics.
//
// A resource is released only when the caller presents an attestation
// token (session cookie or bearer EAR token) that the resource policy
// accepts; it travels sealed (flattened JWE) to the tee key the evidence
// bound. See ../protocol for the wire format.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coffer-dev/coffer/internal/ratelimit"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
)

// Defaults of the options.
const (
	DefaultSessionTTL       = 5 * time.Minute
	DefaultMaxBodyBytes     = 1 << 20 // RCAR and admin JSON bodies
	DefaultMaxResourceBytes = 1 << 20 // admin resource uploads
	DefaultMaxSessions      = 100_000 // attested sessions, and separately challenges
	// DefaultMaxSessionBytes bounds what attested sessions keep alive
	// (their verified claims); DefaultMaxTokenCacheBytes the bearer-token cache.
	DefaultMaxSessionBytes    = 256 << 20
	DefaultMaxTokenCacheBytes = 64 << 20
	// DefaultMaxChallengesPerAddress bounds the challenges (sessions not yet
	// attested) one client address may hold: a node's pods share an address.
	DefaultMaxChallengesPerAddress = 1024
	// DefaultMaxClaimsBytes bounds the verified claims of one attestation,
	// as JSON, before they go into a token.
	DefaultMaxClaimsBytes = 32 << 10
)

type options struct {
	store          store.Store
	verifiers      attest.Verifiers
	engine         *policy.Engine
	signer         *token.Signer
	issuers        *token.TrustedIssuers
	adminKeys      []ed25519.PublicKey
	adminRole      string
	adminACL       map[string][]string
	adminMaxTTL    time.Duration
	insecureAdmin  bool
	sessionTTL     time.Duration
	maxBody        int64
	maxResource    int64
	maxSessions    int
	maxPerAddr     int
	trustedProxies []netip.Prefix
	rate           float64
	burst          int
	logger         *slog.Logger
	now            func() time.Time
	stateDir       string
}

// Option configures New.
type Option func(*options) error

// WithStore sets the resource store. Default: an empty store.NewMemory().
func WithStore(s store.Store) Option {
	return func(o *options) error {
		if s == nil {
			return errors.New("nil store")
		}
		o.store = s
		return nil
	}
}

// WithVerifiers sets the evidence verifiers by tee. Default: attest.Default()
// (tpm, snp, tdx; the sample TEE is refused).
func WithVerifiers(v attest.Verifiers) Option {
	return func(o *options) error { o.verifiers = v; return nil }
}

// WithPolicy sets the policy engine. Default: policy.New (affirming-only
// resource policy, default_cpu attestation policy, no reference values).
func WithPolicy(e *policy.Engine) Option {
	return func(o *options) error { o.engine = e; return nil }
}

// WithSigner sets the EAR token signer. Default: a generated P-256 key, token.DefaultTTL.
func WithSigner(s *token.Signer) Option {
	return func(o *options) error { o.signer = s; return nil }
}

// WithTrustedIssuers makes the broker also accept bearer tokens that
// another attestation service signed, when their x5c chain verifies to
// these roots ("passport" mode). Default: only its own tokens.
func WithTrustedIssuers(t *token.TrustedIssuers) Option {
	return func(o *options) error { o.issuers = t; return nil }
}

// WithAdminKeys sets the Ed25519 keys admin tokens may be signed with.
// Default: none, so the admin API refuses every call (unless WithInsecureAdmin).
func WithAdminKeys(keys ...ed25519.PublicKey) Option {
	return func(o *options) error { o.adminKeys = append(o.adminKeys, keys...); return nil }
}

// WithAdminRole requires admin tokens to carry this "role" claim. Default: "" (role optional).
func WithAdminRole(role string) Option {
	return func(o *options) error { o.adminRole = role; return nil }
}

// WithAdminACL scopes admin tokens by role, like trustee's regex ACL: a
// token whose role is a key of acl may only touch resource paths matching
// one of its patterns (path.Match over repo/type/tag, e.g. "tenant-a/*/*"),
// sees only those in the resource list, and cannot change policies or
// reference values. Such roles are accepted even when WithAdminRole names
// another. Tokens may further narrow themselves (allow_paths claim).
// Default: no ACL (every valid token is unscoped unless it narrows itself).
func WithAdminACL(acl map[string][]string) Option {
	return func(o *options) error {
		o.adminACL = map[string][]string{}
		for role, pats := range acl {
			if role == "" {
				return errors.New("admin acl: empty role")
			}
			if len(pats) == 0 {
				return fmt.Errorf("admin acl: role %q without path patterns", role)
			}
			for _, p := range pats {
				if err := token.ValidatePathPattern(p); err != nil {
					return fmt.Errorf("admin acl role %q: %w", role, err)
				}
			}
			o.adminACL[role] = append([]string(nil), pats...)
		}
		return nil
	}
}

// WithAdminTokenMaxTTL sets the longest admin token lifetime (exp − iat)
// accepted. Default: token.AdminTTL (2 h, what trustee's kbs-client signs);
// coffer's clients sign a token per call that lives token.AdminClientTTL.
func WithAdminTokenMaxTTL(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("admin token max ttl %v: must be positive", d)
		}
		o.adminMaxTTL = d
		return nil
	}
}

// WithInsecureAdmin turns off admin authentication and the plain-HTTP
// restriction. For development only; New logs a warning. Default: false.
func WithInsecureAdmin(yes bool) Option {
	return func(o *options) error { o.insecureAdmin = yes; return nil }
}

// WithSessionTTL sets how long an RCAR session (cookie) lives. Default: DefaultSessionTTL.
func WithSessionTTL(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("session ttl %v: must be positive", d)
		}
		o.sessionTTL = d
		return nil
	}
}

// WithMaxBodyBytes limits JSON request bodies. Default: DefaultMaxBodyBytes.
func WithMaxBodyBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max body bytes %d: must be positive", n)
		}
		o.maxBody = n
		return nil
	}
}

// WithMaxResourceBytes limits uploaded resources. Default: DefaultMaxResourceBytes.
func WithMaxResourceBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max resource bytes %d: must be positive", n)
		}
		o.maxResource = n
		return nil
	}
}

// WithMaxSessions bounds the number of attested sessions and, separately,
// of challenges (sessions not yet attested). When challenges are full the
// oldest go; when attested sessions are full (by count or by
// DefaultMaxSessionBytes) arbitrary ones go (kbs_sessions_evicted_total).
// A flood of /auth never evicts an attested session. Default: DefaultMaxSessions.
func WithMaxSessions(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max sessions %d: must be positive", n)
		}
		o.maxSessions = n
		return nil
	}
}

// WithMaxChallengesPerAddress bounds the challenges (sessions that have
// not attested) one client address may hold; more /auth calls from it get
// 429 until some are used or expire. Default: DefaultMaxChallengesPerAddress.
func WithMaxChallengesPerAddress(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max challenges per address %d: must be positive", n)
		}
		o.maxPerAddr = n
		return nil
	}
}

// WithRateLimit limits /auth and /attest calls per client address to
// perSecond on average with bursts of burst; excess calls get 429 with
// Retry-After. 0 turns the limit off. Behind a proxy every client shares
// the proxy's address: limit there instead. Default: off for the library,
// on in `coffer kbs serve` (Config.RateLimit).
func WithRateLimit(perSecond float64, burst int) Option {
	return func(o *options) error {
		o.rate, o.burst = perSecond, burst
		return ratelimit.Validate(perSecond, burst)
	}
}

// WithTrustedProxies names the addresses (CIDR prefixes, e.g. the
// workload service's "10.0.0.5/32") whose X-Forwarded-For the broker
// believes: calls from them are counted against the client they name (rate
// limit, outstanding challenges), so one flooding client behind a relay
// cannot use up every other client's share. Default: none (every caller is
// its own address).
func WithTrustedProxies(cidrs ...string) Option {
	return func(o *options) error {
		for _, c := range cidrs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				a, aerr := netip.ParseAddr(c)
				if aerr != nil {
					return fmt.Errorf("trusted proxy %q: want an address or CIDR prefix", c)
				}
				p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			}
			o.trustedProxies = append(o.trustedProxies, p.Masked())
		}
		return nil
	}
}

// WithLogger sets the logger for audit and operational lines. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// WithClock sets the time source (tests). Default: time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) error { o.now = now; return nil }
}

// Server is the broker. Create it with New; it is an http.Handler.
type Server struct {
	o        options
	sessions *attested // a cache in front of state's attested sessions
	tokens   *tokenCache
	limiter  *ratelimit.PerAddr
	spentTx  spentTransfers // keytransfer.go: one key transfer per attestation
	m        *metrics
	handler  http.Handler

	// state (see shared.go): the store's own (postgres) or a store.Local
	state           store.State
	init            initial
	kick            chan struct{}
	applyMu         sync.Mutex
	applied         store.Settings // what applySettings last installed (applyMu)
	force           atomic.Bool    // the next reload installs every setting
	settingsVersion atomic.Int64
	bg              context.Context // background work; ends with Close or New's ctx
	stop            context.CancelFunc
}

// New builds a broker. It keeps sessions and policies in a store.State:
// the store's own when it keeps one (the postgres store: the broker then
// follows changes other replicas make until ctx ends or Close is called),
// else a store.Local bounded by WithMaxSessions and saved in WithStateDir.
func New(ctx context.Context, opts ...Option) (*Server, error) {
	o := options{
		sessionTTL:  DefaultSessionTTL,
		maxBody:     DefaultMaxBodyBytes,
		maxResource: DefaultMaxResourceBytes,
		maxSessions: DefaultMaxSessions,
		maxPerAddr:  DefaultMaxChallengesPerAddress,
		now:         time.Now,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("kbs server: %w", err)
		}
	}
	var err error
	if o.store == nil {
		o.store = store.NewMemory()
	}
	if o.verifiers == nil {
		o.verifiers = attest.Default()
	}
	if o.engine == nil {
		if o.engine, err = policy.New(ctx); err != nil {
			return nil, err
		}
	}
	if o.signer == nil {
		if o.signer, err = token.NewSigner(nil, "", 0); err != nil {
			return nil, err
		}
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.insecureAdmin {
		o.logger.Warn("INSECURE ADMIN API: admin calls are NOT authenticated and allowed over plain HTTP; never use this outside development")
	} else if len(o.adminKeys) == 0 {
		o.logger.Info("no admin public key configured: admin API disabled")
	}
	s := &Server{
		o:        o,
		sessions: newAttested(o.maxSessions, DefaultMaxSessionBytes),
		tokens:   newTokenCache(50_000, DefaultMaxTokenCacheBytes),
		limiter:  ratelimit.New(o.rate, o.burst, 65536),
		m:        newMetrics(),
	}
	if s.state, err = store.StateOf(o.store, store.LocalOptions{
		MaxChallenges: o.maxSessions, MaxSessions: o.maxSessions, Dir: o.stateDir, Clock: o.now,
		OnEvict: func(n int) { s.m.evictions.Add(float64(n)) },
	}); err != nil {
		return nil, fmt.Errorf("kbs server: %w", err)
	}
	s.bg, s.stop = context.WithCancel(ctx)
	if err := s.startShared(ctx); err != nil {
		s.stop()
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// Metrics returns the Prometheus registry served at /metrics.
func (s *Server) Metrics() *prometheus.Registry { return s.m.reg }

// Policy returns the policy engine.
func (s *Server) Policy() *policy.Engine { return s.o.engine }

// Store returns the resource store.
func (s *Server) Store() store.Store { return s.o.store }

// Signer returns the EAR token signer.
func (s *Server) Signer() *token.Signer { return s.o.signer }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// route names for metrics.
const (
	rAuth, rAttest, rResource, rAdmin, rHealth, rMetrics, rOther = "auth", "attest", "resource", "admin", "healthz", "metrics", "other"
	rKeyTransfer                                                 = "key_transfer"
)

func (s *Server) routes() http.Handler {
	metricsHandler := promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		route := s.dispatch(sw, r, metricsHandler)
		s.m.requests.WithLabelValues(route, statusClass(sw.code)).Inc()
	})
}

func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, metricsHandler http.Handler) string {
	p := r.URL.EscapedPath()
	switch {
	case p == protocol.PathAuth:
		if !method(w, r, http.MethodPost) {
			return rAuth
		}
		s.handleAuth(w, r)
		return rAuth
	case p == protocol.PathAttest:
		if !method(w, r, http.MethodPost) {
			return rAttest
		}
		s.handleAttest(w, r)
		return rAttest
	case p == strings.TrimSuffix(protocol.PathResource, "/") || p == protocol.PathResource:
		if method(w, r, http.MethodGet) {
			s.admin(w, r, targetList, "", func(sc adminScope) { s.handleListResources(w, r, sc) })
		}
		return rAdmin
	case strings.HasPrefix(p, protocol.PathResource):
		rest := p[len(protocol.PathResource):]
		switch r.Method {
		case http.MethodGet:
			s.handleGetResource(w, r, rest)
			return rResource
		case http.MethodPost, http.MethodPut:
			s.admin(w, r, targetResource, rest, func(adminScope) { s.handleSetResource(w, r, rest) })
		case http.MethodDelete:
			s.admin(w, r, targetResource, rest, func(adminScope) { s.handleDeleteResource(w, r, rest) })
		default:
			method(w, r, http.MethodGet, http.MethodPost, http.MethodDelete)
		}
		return rAdmin
	case p == protocol.PathResourcePolicy:
		switch r.Method {
		case http.MethodGet:
			s.admin(w, r, targetSettings, "", func(adminScope) { s.handleGetResourcePolicy(w, r) })
		case http.MethodPost:
			s.admin(w, r, targetSettings, "", func(adminScope) { s.handleSetResourcePolicy(w, r) })
		default:
			method(w, r, http.MethodGet, http.MethodPost)
		}
		return rAdmin
	case p == protocol.PathAttestationPolicy:
		if method(w, r, http.MethodPost) {
			s.admin(w, r, targetSettings, "", func(adminScope) { s.handleSetAttestationPolicy(w, r) })
		}
		return rAdmin
	case p == protocol.PathReferenceValue:
		if method(w, r, http.MethodPost) {
			s.admin(w, r, targetSettings, "", func(adminScope) { s.handleSetReferenceValue(w, r) })
		}
		return rAdmin
	case strings.HasPrefix(p, protocol.PathKeyTransfer):
		if method(w, r, http.MethodPost) {
			s.handleKeyTransfer(w, r, p[len(protocol.PathKeyTransfer):])
		}
		return rKeyTransfer
	case p == "/healthz":
		s.healthz(w, r)
		return rHealth
	case p == "/metrics":
		metricsHandler.ServeHTTP(w, r)
		return rMetrics
	}
	writeError(w, http.StatusNotFound, protocol.ErrInvalidPath, fmt.Sprintf("no endpoint %s", r.URL.Path))
	return rOther
}

func method(w http.ResponseWriter, r *http.Request, allowed ...string) bool {
	for _, m := range allowed {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, http.StatusMethodNotAllowed, protocol.ErrInvalidRequest, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
	return false
}

// writeError sends the reference's {"type","detail"} body.
func writeError(w http.ResponseWriter, code int, variant, detail string) {
	writeJSON(w, code, protocol.NewError(variant, detail))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"type":"`+protocol.ErrorTypePrefix+protocol.ErrInternal+`","detail":"encoding response"}`)
	}
	w.Header().Set("Content-Type", protocol.ContentTypeJSON)
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// readJSON decodes a size-limited JSON body into v, answering 413/400 itself.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, ok := s.readBody(w, r, s.o.maxBody)
	if !ok {
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, protocol.ErrPayloadTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d", r.ContentLength, limit))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, protocol.ErrPayloadTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", limit))
		} else {
			writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "reading request body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func statusClass(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 403:
		return "403"
	case 404:
		return "404"
	case 413:
		return "413"
	}
	return fmt.Sprintf("%dxx", code/100)
}

// sessionLogID is a non-secret handle for a session in logs.
func sessionLogID(id string) string {
	if id == "" {
		return ""
	}
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:6])
}

func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
