package wls

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/internal/ratelimit"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
)

type options struct {
	signers       []*x509.Certificate
	adminKeys     []ed25519.PublicKey
	insecureAdmin bool
	logger        *slog.Logger
	hc            *http.Client
	now           func() time.Time
	brokers       []string
	rate          float64
	burst         int
	maxPending    int
	maxPerBroker  int
	brokerRate    float64
	brokerBurst   int
}

// Option configures New.
type Option func(*options) error

// WithFlavorSigners sets the certificates whose keys may sign flavors.
// Required: without one New fails (coffer stores no unverified flavor).
func WithFlavorSigners(certs ...*x509.Certificate) Option {
	return func(o *options) error { o.signers = append(o.signers, certs...); return nil }
}

// WithAdminKeys sets the Ed25519 keys admin tokens may be signed with.
// Default: none, so admin calls are refused.
func WithAdminKeys(keys ...ed25519.PublicKey) Option {
	return func(o *options) error { o.adminKeys = append(o.adminKeys, keys...); return nil }
}

// WithInsecureAdmin turns off admin authentication (development only;
// logged loudly). Default: false.
func WithInsecureAdmin(yes bool) Option {
	return func(o *options) error { o.insecureAdmin = yes; return nil }
}

// WithLogger sets the logger for audit lines. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) error { o.logger = l; return nil } }

// WithBrokerClient sets the HTTP client for calls to brokers. Default: a
// client with a 30 s timeout.
func WithBrokerClient(hc *http.Client) Option {
	return func(o *options) error { o.hc = hc; return nil }
}

// WithAllowedBrokers lets hosts ask for keys by URL on these brokers
// (scheme://host[:port]) besides those stored flavors name. Default: none.
func WithAllowedBrokers(urls ...string) Option {
	return func(o *options) error {
		for _, u := range urls {
			o.brokers = append(o.brokers, strings.TrimRight(u, "/"))
		}
		return nil
	}
}

// WithRateLimit limits the host endpoints (flavor-key, keys) per client
// address: each call makes the service open a broker session, and the
// broker counts them all against the service's one address, so without a
// limit one client could use up every host's share. 0 turns it off.
// Default: off for the library, on in `coffer wls serve`.
func WithRateLimit(perSecond float64, burst int) Option {
	return func(o *options) error {
		o.rate, o.burst = perSecond, burst
		return ratelimit.Validate(perSecond, burst)
	}
}

// DefaultMaxPendingPerCaller is how many broker challenges one client
// address may hold unanswered through the service (WithMaxPendingPerCaller).
const DefaultMaxPendingPerCaller = 8

// WithMaxPendingPerCaller bounds the broker challenges one client address
// may have opened through the service and not yet answered (each lives
// until answered or for the broker's 5-minute session lifetime): a caller
// that asks and never answers cannot fill the broker's per-address quota,
// which every host behind this service shares unless the broker trusts the
// service's X-Forwarded-For (kbs serve --trusted-proxy). Default
// DefaultMaxPendingPerCaller.
func WithMaxPendingPerCaller(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("wls: max pending challenges per caller must be ≥ 1, got %d", n)
		}
		o.maxPending = n
		return nil
	}
}

// Server is the workload service, an http.Handler.
type Server struct {
	o       options
	store   *Store
	limit   *ratelimit.PerAddr
	idx     index
	pending *pendingChallenges
	gatesMu sync.Mutex
	gates   map[string]*brokerGate // per broker base (fairness.go)
}

// index holds the stored flavors, verified once (at start and on upload),
// and how many name each broker: a host request costs map lookups, not a
// pass over the store (review 3, W21).
type index struct {
	mu      sync.RWMutex
	flavors map[string]indexed
	brokers map[string]int // broker base URL → stored flavors naming it
}

type indexed struct {
	f   *flavor.Flavor
	doc []byte // the verified document, as stored
}

func brokerOf(f *flavor.Flavor) string {
	if f.Encryption == nil {
		return ""
	}
	b, _, err := flavor.ParseKeyURL(f.Encryption.KeyURL)
	if err != nil {
		return ""
	}
	return b
}

// put adds or replaces id's entry.
func (x *index) put(id string, f *flavor.Flavor, doc []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.flavors[id]; ok {
		if b := brokerOf(old.f); b != "" {
			if x.brokers[b]--; x.brokers[b] <= 0 {
				delete(x.brokers, b)
			}
		}
	}
	x.flavors[id] = indexed{f: f, doc: doc}
	if b := brokerOf(f); b != "" {
		x.brokers[b]++
	}
}

func (x *index) get(id string) (indexed, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.flavors[id]
	return e, ok
}

func (x *index) ids() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ids := make([]string, 0, len(x.flavors))
	for id := range x.flavors {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (x *index) names(base string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.brokers[base] > 0
}

// New returns a workload service over store.
func New(store *Store, opts ...Option) (*Server, error) {
	o := options{now: time.Now, maxPending: DefaultMaxPendingPerCaller, maxPerBroker: DefaultMaxPendingPerBroker,
		brokerRate: DefaultBrokerRate, brokerBurst: DefaultBrokerBurst}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if len(o.signers) == 0 {
		return nil, errors.New("wls: no flavor signer certificate: the service verifies every flavor")
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.hc == nil {
		o.hc = &http.Client{Timeout: 30 * time.Second}
	}
	// Never follow a broker's redirect: a broker a flavor names could
	// otherwise point this service (POST and body kept on 307) anywhere.
	hc := *o.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	o.hc = &hc
	if o.insecureAdmin {
		o.logger.Warn("INSECURE ADMIN API: wls admin calls are NOT authenticated; never use this outside development")
	}
	srv := &Server{o: o, store: store, limit: ratelimit.New(o.rate, o.burst, 65536),
		idx:     index{flavors: map[string]indexed{}, brokers: map[string]int{}},
		pending: newPendingChallenges(o.maxPending, o.maxPerBroker),
		gates:   map[string]*brokerGate{}}
	ids, err := store.FlavorIDs()
	if err != nil {
		return nil, fmt.Errorf("wls: listing stored flavors: %w", err)
	}
	for _, id := range ids {
		doc, err := store.Flavor(id)
		if err != nil {
			return nil, fmt.Errorf("wls: reading flavor %s: %w", id, err)
		}
		f, kept, err := flavor.VerifyDoc(doc, o.signers)
		if err != nil || f.Meta.ID != id {
			o.logger.Warn("wls: a stored flavor does not verify with the configured signers: not served", "flavor", id, "err", err)
			continue
		}
		srv.idx.put(id, f, kept)
	}
	return srv, nil
}

func writeError(w http.ResponseWriter, code int, variant, detail string) {
	writeJSON(w, code, protocol.NewError(variant, detail))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", protocol.ContentTypeJSON)
	w.WriteHeader(code)
	w.Write(b)
}

func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, protocol.ErrPayloadTooLarge, fmt.Sprintf("request body unreadable or over %d bytes", max))
		return nil, false
	}
	return b, true
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	switch {
	case p == PathFlavors && r.Method == http.MethodPost:
		s.admin(w, r, s.addFlavor)
	case p == PathFlavors && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string][]string{"ids": s.idx.ids()}) // the flavors served: those that verify
	case strings.HasPrefix(p, PathFlavors+"/") && r.Method == http.MethodPut:
		id := p[len(PathFlavors)+1:]
		s.admin(w, r, func(w http.ResponseWriter, r *http.Request) { s.replaceFlavor(w, r, id) })
	case strings.HasPrefix(p, PathFlavors+"/") && r.Method == http.MethodGet:
		e, ok := s.idx.get(p[len(PathFlavors)+1:])
		if !ok {
			writeError(w, http.StatusNotFound, protocol.ErrResourceNotFound, "no such flavor")
			return
		}
		w.Header().Set("Content-Type", protocol.ContentTypeJSON)
		w.Write(e.doc) // the verified document (VerifyDoc), never the bytes as uploaded
	case p == PathImages && r.Method == http.MethodPost:
		s.admin(w, r, s.addImage)
	case (p == PathKeyChallenge || p == PathKeys || strings.HasSuffix(p, FlavorKeySuffix)) && s.limited(w, r):
	case p == PathKeyChallenge && r.Method == http.MethodPost:
		s.keyChallenge(w, r)
	case p == PathKeys && r.Method == http.MethodPost:
		s.keyByURL(w, r)
	case strings.HasPrefix(p, PathImages+"/") && strings.HasSuffix(p, FlavorKeySuffix):
		id := strings.TrimSuffix(p[len(PathImages)+1:], FlavorKeySuffix)
		switch r.Method {
		case http.MethodGet:
			s.challenge(w, r, id)
		case http.MethodPost:
			s.flavorKey(w, r, id)
		default:
			writeError(w, http.StatusMethodNotAllowed, protocol.ErrInvalidRequest, "GET or POST")
		}
	case strings.HasPrefix(p, PathImages+"/") && r.Method == http.MethodGet:
		b, err := s.store.ImageData(p[len(PathImages)+1:])
		if err != nil {
			s.storeError(w, err)
			return
		}
		w.Header().Set("Content-Type", protocol.ContentTypeJSON)
		w.Write(b)
	case p == "/healthz":
		io.WriteString(w, "ok\n")
	default:
		writeError(w, http.StatusNotFound, protocol.ErrInvalidPath, "no endpoint "+r.Method+" "+r.URL.Path)
	}
}

// limited answers 429 when the caller's address used up its budget.
func (s *Server) limited(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.limit.Allow(ratelimit.Key(r.RemoteAddr), s.o.now())
	if ok {
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
	writeError(w, http.StatusTooManyRequests, protocol.ErrTooManyRequests, "too many key requests from this address: retry later")
	return true
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	if errors.Is(err, spec.ErrNotFound) {
		writeError(w, http.StatusNotFound, protocol.ErrResourceNotFound, err.Error())
		return
	}
	s.o.logger.Error("wls store", "err", err)
	writeError(w, http.StatusInternalServerError, protocol.ErrInternal, "store failed")
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// admin authenticates an admin call as the broker does (Ed25519 token,
// lifetime ≤ 2 h, one write per jti, no plain HTTP from afar).
func (s *Server) admin(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request)) {
	if s.o.insecureAdmin {
		s.o.logger.Warn("wls admin call NOT authenticated (insecure admin mode)", "method", r.Method, "path", r.URL.Path)
		next(w, r)
		return
	}
	if r.TLS == nil && !isLoopback(r.RemoteAddr) {
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin API refused over plain HTTP from a non-loopback address: use TLS")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || len(s.o.adminKeys) == 0 {
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin call without a Bearer admin token, or no admin key configured")
		return
	}
	now := s.o.now()
	c, err := token.VerifyAdmin(strings.TrimSpace(tok), s.o.adminKeys, token.AdminCheck{}, now)
	if err == nil && c.ID != "" {
		// on disk before the write it authorizes: a restart does not revive it (W3)
		if err = s.store.SpendAdminID(c.ID, c.Expiry, now); errors.Is(err, spec.ErrExists) {
			err = errors.New("admin token already used for a write (jti replay): sign a new one")
		}
	}
	if err != nil {
		s.o.logger.Warn("wls admin refused", "remote", r.RemoteAddr, "reason", err.Error())
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin token rejected: "+err.Error())
		return
	}
	next(w, r)
}

func (s *Server) addFlavor(w http.ResponseWriter, r *http.Request) {
	doc, ok := readBody(w, r, flavor.MaxSignedFlavor)
	if !ok {
		return
	}
	f, kept, err := flavor.VerifyDoc(doc, s.o.signers)
	if err != nil {
		s.o.logger.Info("wls audit", "op", "add flavor", "decision", "refused", "reason", err.Error())
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "flavor refused: "+err.Error())
		return
	}
	if err := s.store.PutFlavor(f.Meta.ID, kept); err != nil {
		if errors.Is(err, spec.ErrExists) {
			s.o.logger.Info("wls audit", "op", "add flavor", "decision", "refused", "flavor", f.Meta.ID, "reason", "id already stored")
			writeError(w, http.StatusConflict, protocol.ErrResourceExists, fmt.Sprintf("flavor %s is already stored: flavors are create-only (replace it explicitly with coffer wls replace-flavor)", f.Meta.ID))
			return
		}
		s.storeError(w, err)
		return
	}
	s.idx.put(f.Meta.ID, f, kept)
	s.o.logger.Info("wls audit", "op", "add flavor", "decision", "stored", "flavor", f.Meta.ID, "label", f.Meta.Description.Label)
	writeJSON(w, http.StatusCreated, map[string]string{"id": f.Meta.ID})
}

// replaceFlavor is the explicit, audited replacement of a stored flavor
// (PUT /wls/flavors/{id}): the document must verify and carry id.
func (s *Server) replaceFlavor(w http.ResponseWriter, r *http.Request, id string) {
	doc, ok := readBody(w, r, flavor.MaxSignedFlavor)
	if !ok {
		return
	}
	f, kept, err := flavor.VerifyDoc(doc, s.o.signers)
	if err == nil && f.Meta.ID != id {
		err = fmt.Errorf("the document is flavor %s, the path names %s", f.Meta.ID, id)
	}
	if err != nil {
		s.o.logger.Info("wls audit", "op", "replace flavor", "flavor", id, "decision", "refused", "reason", err.Error())
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "flavor refused: "+err.Error())
		return
	}
	old, had := s.idx.get(id)
	if err := s.store.ReplaceFlavor(id, kept); err != nil {
		s.storeError(w, err)
		return
	}
	s.idx.put(id, f, kept)
	attrs := []any{"op", "replace flavor", "decision", "replaced", "flavor", id, "label", f.Meta.Description.Label, "remote", r.RemoteAddr}
	if f.Encryption != nil {
		attrs = append(attrs, "key_url", f.Encryption.KeyURL)
	}
	if had {
		attrs = append(attrs, "old_label", old.f.Meta.Description.Label)
		if old.f.Encryption != nil {
			attrs = append(attrs, "old_key_url", old.f.Encryption.KeyURL)
		}
	}
	s.o.logger.Warn("wls audit", attrs...)
	writeJSON(w, http.StatusOK, map[string]string{"id": id})
}

func (s *Server) addImage(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxBody)
	if !ok {
		return
	}
	var img Image
	if err := json.Unmarshal(body, &img); err != nil || !flavor.ValidID(img.ID) || len(img.FlavorIDs) == 0 || len(img.FlavorIDs) > 64 {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, `want {"id":"<uuid>","flavor_ids":["<uuid>",…]} with 1 to 64 flavors`)
		return
	}
	for _, fid := range img.FlavorIDs {
		if _, ok := s.idx.get(fid); !ok {
			writeError(w, http.StatusBadRequest, protocol.ErrResourceNotFound, fmt.Sprintf("flavor %s is not in this service: add it first", fid))
			return
		}
	}
	data, _ := json.Marshal(img)
	if err := s.store.PutImage(img, data); err != nil {
		s.storeError(w, err)
		return
	}
	s.o.logger.Info("wls audit", "op", "add image", "image", img.ID, "flavors", img.FlavorIDs)
	writeJSON(w, http.StatusCreated, img)
}

// imageFlavor returns the image's first flavor that needs a key, with
// the flavor document (from the index: verified when it was stored or
// loaded).
func (s *Server) imageFlavor(id string) (*flavor.Flavor, []byte, error) {
	b, err := s.store.ImageData(id)
	if err != nil {
		return nil, nil, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, nil, fmt.Errorf("image %s: stored record unreadable: %w", id, err)
	}
	for _, fid := range img.FlavorIDs {
		e, ok := s.idx.get(fid)
		if !ok {
			continue
		}
		if f := e.f; f.EncryptionRequired && f.Encryption != nil && f.Encryption.KeyURL != "" {
			return f, e.doc, nil
		}
	}
	return nil, nil, fmt.Errorf("image %s has no flavor with an encryption key: %w", id, spec.ErrNotFound)
}

func (s *Server) audit(r *http.Request, image, decision, reason string) {
	s.o.logger.LogAttrs(r.Context(), slog.LevelInfo, "wls audit", slog.String("op", "flavor-key"),
		slog.String("image", image), slog.String("remote", r.RemoteAddr), slog.String("decision", decision), slog.String("reason", reason))
}

// challenge relays a fresh broker nonce for the image's key.
func (s *Server) challenge(w http.ResponseWriter, r *http.Request, id string) {
	f, _, err := s.imageFlavor(id)
	if err != nil {
		s.audit(r, id, "refused", err.Error())
		s.storeError(w, err)
		return
	}
	base, _, err := flavor.ParseKeyURL(f.Encryption.KeyURL)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, fmt.Sprintf("flavor %s: %v", f.Meta.ID, err))
		return
	}
	s.relayChallenge(w, r, id, base)
}

// flavorKey relays the host's attestation and binding key to the broker
// and returns the flavor with the wrapped key.
func (s *Server) flavorKey(w http.ResponseWriter, r *http.Request, id string) {
	body, ok := readBody(w, r, maxBody)
	if !ok {
		return
	}
	var kr KeyRequest
	if err := json.Unmarshal(body, &kr); err != nil || kr.Session == "" {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "want a KeyRequest {session, attestation, binding_key}")
		return
	}
	f, doc, err := s.imageFlavor(id)
	if err != nil {
		s.audit(r, id, "refused", err.Error())
		s.storeError(w, err)
		return
	}
	base, keyID, err := flavor.ParseKeyURL(f.Encryption.KeyURL)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, fmt.Sprintf("flavor %s: %v", f.Meta.ID, err))
		return
	}
	s.pending.done(kr.Session)
	wrapped, proof, err := s.brokerTransfer(r.Context(), base, keyID, clientIP(r), ratelimit.Key(r.RemoteAddr), kr)
	if err != nil {
		s.brokerError(w, r, id, base, err)
		return
	}
	var sd flavor.Signed
	json.Unmarshal(doc, &sd)
	s.audit(r, id, "released", "key "+keyID+" wrapped to the host's TPM binding key")
	writeJSON(w, http.StatusOK, FlavorKey{Flavor: sd.Flavor, Signature: sd.Signature, Key: wrapped, Proof: proof})
}

// brokerError answers for a failed broker call: 403 when the broker
// distrusts the host, 502 when it cannot be reached or answers oddly. The
// host gets a fixed message naming the broker and its status, never the
// broker's reply (a broker named by a flavor is not the host's to read
// through this service); the audit log keeps the detail.
func (s *Server) brokerError(w http.ResponseWriter, r *http.Request, image, base string, err error) {
	var be *protocol.BrokerError
	switch {
	case errors.Is(err, errBusy):
		s.audit(r, image, "refused", "broker gate: no turn in time")
		retryAfter(w)
	case errors.As(err, &be) && be.Status == http.StatusTooManyRequests:
		// The broker's own rate limit: transient, as the gate's is.
		s.audit(r, image, "refused", "broker busy (HTTP 429)")
		retryAfter(w)
	case errors.As(err, &be) && (be.Status == http.StatusUnauthorized || be.Status == http.StatusForbidden):
		s.audit(r, image, "refused", "host not trusted: "+err.Error())
		writeError(w, http.StatusForbidden, protocol.ErrPolicyDeny, fmt.Sprintf("host not trusted by the image owner's broker %s (HTTP %d; its reason is in the workload service's audit log)", base, be.Status))
	case errors.As(err, &be):
		s.audit(r, image, "failed", err.Error())
		writeError(w, http.StatusBadGateway, protocol.ErrInternal, fmt.Sprintf("the image owner's broker %s refused (HTTP %d)", base, be.Status))
	default:
		s.audit(r, image, "failed", "broker unreachable: "+err.Error())
		writeError(w, http.StatusBadGateway, protocol.ErrInternal, fmt.Sprintf("the image owner's broker %s is unreachable or answered oddly", base))
	}
}

// brokerAllowed reports whether base is a broker hosts may reach through
// this service: allowed by the operator, or named by a stored flavor
// (the index: O(1) per request, W21).
func (s *Server) brokerAllowed(base string) bool {
	for _, b := range s.o.brokers {
		if b == base {
			return true
		}
	}
	return s.idx.names(base)
}

// keyURLFrom parses and authorizes a host-supplied key URL.
func (s *Server) keyURLFrom(w http.ResponseWriter, r *http.Request, keyURL string) (base, id string, ok bool) {
	base, id, err := flavor.ParseKeyURL(keyURL)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, err.Error())
		return "", "", false
	}
	if !s.brokerAllowed(base) {
		s.audit(r, keyURL, "refused", "broker not known to this service")
		writeError(w, http.StatusForbidden, protocol.ErrPolicyDeny, fmt.Sprintf("broker %s is not one this service serves keys from (no stored flavor names it; see --allowed-broker)", base))
		return "", "", false
	}
	return base, id, true
}

func (s *Server) keyChallenge(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxBody)
	if !ok {
		return
	}
	var kr KeyURLRequest
	if err := json.Unmarshal(body, &kr); err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, `want {"key_url":…}`)
		return
	}
	base, _, ok := s.keyURLFrom(w, r, kr.KeyURL)
	if !ok {
		return
	}
	s.relayChallenge(w, r, kr.KeyURL, base)
}

func (s *Server) keyByURL(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxBody)
	if !ok {
		return
	}
	var kr KeyURLRequest
	if err := json.Unmarshal(body, &kr); err != nil || kr.Session == "" {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "want a KeyURLRequest {key_url, session, attestation, binding_key}")
		return
	}
	base, id, ok := s.keyURLFrom(w, r, kr.KeyURL)
	if !ok {
		return
	}
	s.pending.done(kr.Session)
	wrapped, proof, err := s.brokerTransfer(r.Context(), base, id, clientIP(r), ratelimit.Key(r.RemoteAddr), kr.KeyRequest)
	if err != nil {
		s.brokerError(w, r, kr.KeyURL, base, err)
		return
	}
	s.audit(r, kr.KeyURL, "released", "key wrapped to the host's TPM binding key")
	writeJSON(w, http.StatusOK, ReturnKey{Key: wrapped, Proof: proof})
}
