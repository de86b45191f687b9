package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/internal/ratelimit"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

var emptyExtraParams = json.RawMessage(`""`)

// limited answers 429 when addr has used up its /auth and /attest budget.
func (s *Server) limited(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.limiter.Allow(s.clientKey(r), s.o.now())
	if ok {
		return false
	}
	s.m.limited.Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
	writeError(w, http.StatusTooManyRequests, protocol.ErrTooManyRequests, "too many /auth and /attest calls from this address: retry later")
	return true
}

// clientKey is whom a call counts against: its address (ratelimit.Key),
// or, from a trusted proxy (WithTrustedProxies), the last address of its
// X-Forwarded-For.
func (s *Server) clientKey(r *http.Request) string {
	key := ratelimit.Key(r.RemoteAddr)
	if len(s.o.trustedProxies) == 0 {
		return key
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return key
	}
	trusted := false
	for _, p := range s.o.trustedProxies {
		if p.Contains(a.Unmap()) {
			trusted = true
			break
		}
	}
	xff := r.Header.Values("X-Forwarded-For")
	if !trusted || len(xff) == 0 {
		return key
	}
	last := xff[len(xff)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	c, err := netip.ParseAddr(strings.TrimSpace(last))
	if err != nil {
		return key
	}
	return "fwd:" + ratelimit.Key(c.String())
}

func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	if s.limited(w, r) {
		return
	}
	var req protocol.Request
	if !s.readJSON(w, r, &req) {
		return
	}
	if req.Version != protocol.Version {
		writeError(w, http.StatusUnauthorized, protocol.ErrAuthFailed,
			fmt.Sprintf("protocol version %q not supported, this broker speaks %s", req.Version, protocol.Version))
		return
	}
	if req.Tee == protocol.TeeSample && !s.o.verifiers.Supports(req.Tee) {
		s.m.attestations.WithLabelValues(string(req.Tee), "failed").Inc()
		writeError(w, http.StatusUnauthorized, protocol.ErrPolicyDeny,
			"this broker refuses the sample TEE (no hardware root of trust): attest with tpm, snp or tdx, or start the broker with --allow-sample-tee for development")
		return
	}
	if !s.o.verifiers.Supports(req.Tee) {
		s.m.attestations.WithLabelValues("unsupported", "failed").Inc()
		writeError(w, http.StatusUnauthorized, protocol.ErrUnsupportedTee, fmt.Sprintf("no verifier for tee %q on this broker", req.Tee))
		return
	}
	var raw [protocol.NonceSize]byte
	_, _ = rand.Read(raw[:])
	nonce := base64.StdEncoding.EncodeToString(raw[:])
	// A verifier may take part in /auth (tpm: credential activation).
	challengeExtra, err := s.o.verifiers.Challenge(r.Context(), req.Tee, nonce, req.ExtraParams)
	if err != nil {
		s.m.attestations.WithLabelValues(string(req.Tee), "failed").Inc()
		writeError(w, http.StatusUnauthorized, protocol.ErrAttestFailed, "auth extra-params refused: "+err.Error())
		return
	}
	now := s.o.now()
	expires := now.Add(s.o.sessionTTL)
	id := newSessionID()
	err = s.state.CreateChallenge(r.Context(), store.Challenge{ID: id, Tee: string(req.Tee), Nonce: nonce, Addr: s.clientKey(r), Expires: expires}, s.o.maxPerAddr)
	if errors.Is(err, errTooManyPerAddr) {
		s.m.limited.Inc()
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, protocol.ErrTooManyRequests,
			fmt.Sprintf("%v (%d): attest or let them expire first", err, s.o.maxPerAddr))
		return
	}
	if err != nil {
		s.storeFailed(w, "creating the session", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: protocol.SessionCookie, Value: id, Path: "/", Expires: expires, HttpOnly: true, Secure: r.TLS != nil})
	writeJSON(w, http.StatusOK, protocol.Challenge{Nonce: nonce, ExtraParams: challengeExtra})
}

// cookie returns the caller's session id, or writes 401 and returns "".
func cookie(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(protocol.SessionCookie)
	if err != nil || c.Value == "" {
		writeError(w, http.StatusUnauthorized, protocol.ErrSessionNotFound, "no kbs-session-id cookie: call /kbs/v0/auth first")
		return ""
	}
	return c.Value
}

// session returns the caller's live attested session, or writes 401 and returns nil.
func (s *Server) session(w http.ResponseWriter, r *http.Request) *session {
	id := cookie(w, r)
	if id == "" {
		return nil
	}
	now := s.o.now()
	sess, ok := s.sessions.get(id, now)
	if !ok {
		// A cookie this replica does not hold costs a state read: only
		// well-formed ones, within the per-address budget of /auth and
		// /attest (a client misses at most once per replica and session).
		if !validSessionID(id) {
			writeError(w, http.StatusUnauthorized, protocol.ErrSessionNotFound, "session unknown or expired: call /kbs/v0/auth again")
			return nil
		}
		if s.limited(w, r) {
			return nil
		}
		var err error
		if sess, err = s.sharedSession(r.Context(), id, now); err != nil {
			s.storeFailed(w, "reading the session", err)
			return nil
		}
		ok = sess != nil
	}
	if !ok {
		if _, err := s.peek(r.Context(), id, now); err == nil || errors.Is(err, errChallengeUsed) {
			writeError(w, http.StatusUnauthorized, protocol.ErrSessionNotFound, "session not attested: call /kbs/v0/attest first")
			return nil
		}
		writeError(w, http.StatusUnauthorized, protocol.ErrSessionNotFound, "session unknown or expired: call /kbs/v0/auth again")
		return nil
	}
	return sess
}

// handleAttest checks the cheap things first (cookie, body size and form,
// the challenge's one attempt, nonce, tee key, report-data binding), then
// the evidence, then the policy; each step ends with the request's
// context. The body is read and parsed before the challenge is spent (one
// state round trip), so a malformed body does not cost the challenge on
// any store; a well-formed one spends it, whatever the outcome.
func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	if s.limited(w, r) {
		return
	}
	id := cookie(w, r)
	if id == "" {
		return
	}
	var a protocol.Attestation
	if !s.readJSON(w, r, &a) {
		return
	}
	sess, err := s.spend(r.Context(), id, s.o.now())
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			s.storeFailed(w, "spending the challenge", err)
			return
		}
		if errors.Is(err, errChallengeUsed) {
			writeError(w, http.StatusUnauthorized, protocol.ErrAttestFailed, "the nonce of this session was already used: call /kbs/v0/auth for a fresh one")
		} else {
			writeError(w, http.StatusUnauthorized, protocol.ErrSessionNotFound, "session unknown or expired: call /kbs/v0/auth again")
		}
		return
	}
	log := s.o.logger.With("session", sessionLogID(sess.id), "tee", string(sess.tee))
	fail := func(code int, variant, detail string) {
		s.m.attestations.WithLabelValues(string(sess.tee), "failed").Inc()
		log.Info("kbs attestation", "decision", "rejected", "reason", detail)
		writeError(w, code, variant, detail)
	}
	if subtle.ConstantTimeCompare([]byte(a.RuntimeData.Nonce), []byte(sess.nonce)) != 1 {
		fail(http.StatusUnauthorized, protocol.ErrAttestFailed, "runtime-data nonce does not match the session's challenge")
		return
	}

	pub := a.RuntimeData.TeePubKey
	if _, err := pub.PublicKey(); err != nil {
		fail(http.StatusUnauthorized, protocol.ErrTeePubKey, "tee-pubkey unusable: "+err.Error())
		return
	}
	digest, err := protocol.ReportDataDigest(a.RuntimeData.Nonce, pub, a.TeeEvidence.AdditionalEvidence)
	if err != nil {
		fail(http.StatusUnauthorized, protocol.ErrAttestFailed, "computing report data: "+err.Error())
		return
	}
	if r.Context().Err() != nil {
		fail(http.StatusServiceUnavailable, protocol.ErrAttestFailed, "client went away")
		return
	}
	claims, err := s.o.verifiers.Verify(r.Context(), attest.Evidence{
		Tee: sess.tee, Primary: a.TeeEvidence.PrimaryEvidence, Additional: a.TeeEvidence.AdditionalEvidence,
		ReportData: digest, Nonce: a.RuntimeData.Nonce, InitData: a.InitData,
	})
	if err != nil {
		fail(http.StatusUnauthorized, protocol.ErrAttestFailed, "evidence rejected: "+err.Error())
		return
	}
	// Everything the token will copy from the request and the evidence,
	// measured once, before the policy sees it (the policy's reasons are
	// bounded by the policy package).
	initData, _ := claims["init_data"].(string) // only when the evidence binds it
	ae := token.AnnotatedEvidence(sess.tee, claims, base64.StdEncoding.EncodeToString(digest), a.RuntimeData, initData)
	if n, err := jsonSize(ae); err != nil || n > DefaultMaxClaimsBytes {
		fail(http.StatusUnauthorized, protocol.ErrAttestFailed, fmt.Sprintf("token claims of %d bytes (evidence claims, tee-pubkey, init-data) exceed the broker's limit of %d", n, DefaultMaxClaimsBytes))
		return
	}
	if r.Context().Err() != nil {
		fail(http.StatusServiceUnavailable, protocol.ErrAttestFailed, "client went away")
		return
	}
	ap, err := s.o.engine.Appraise(r.Context(), sess.tee, claims)
	if err != nil {
		fail(http.StatusUnauthorized, protocol.ErrPolicyEngine, err.Error())
		return
	}
	tv, policyID := ap.Vector, ap.PolicyID
	status := tv.Status()
	now := s.o.now()
	sub := token.Submod{Status: status, TrustVector: tv, PolicyID: policyID, AnnotatedEvidence: ae}
	if len(ap.Reasons) > 0 {
		sub.PolicyClaims = map[string]any{"reasons": ap.Reasons}
	}
	tok, v, err := s.o.signer.IssueVerified(now, sub)
	if err != nil {
		fail(http.StatusInternalServerError, protocol.ErrInternal, "issuing token failed")
		return
	}
	g, err := grantOf(v)
	if err != nil {
		fail(http.StatusInternalServerError, protocol.ErrInternal, "preparing token claims: "+err.Error())
		return
	}
	g.tee = string(sess.tee)
	if err := s.state.PutSession(r.Context(), sess.id, []byte(tok), sess.expires); err != nil {
		s.m.attestations.WithLabelValues(string(sess.tee), "failed").Inc()
		s.storeFailed(w, "storing the attested session", err)
		return
	}
	s.tokens.put(tok, g, now)
	sess.grant = g
	if evicted := s.sessions.put(sess, now); evicted > 0 {
		s.m.evictions.Add(float64(evicted))
		s.o.logger.Warn("kbs attested-session table full: sessions evicted", "evicted", evicted)
	}
	s.m.attestations.WithLabelValues(string(sess.tee), status).Inc()
	log.Info("kbs attestation", "decision", "token issued", "status", status, "policy", policyID, "reasons", ap.Reasons)
	writeJSON(w, http.StatusOK, protocol.AttestResponse{Token: tok})
}

func grantOf(v *token.Verified) (*grant, error) {
	in, err := policy.NewInputJSON(v.Payload)
	if err != nil {
		return nil, err
	}
	tee, tpmAK := "", ""
	var tpmRD []byte
	var reasons []string
	if sm, ok := v.Claims["submods"].(map[string]any); ok {
		if c, ok := sm[token.DefaultSubmod].(map[string]any); ok {
			if pc, ok := c["ear.veraison.policy-claims"].(map[string]any); ok {
				rs, _ := pc["reasons"].([]any)
				for _, r := range rs {
					if s, ok := r.(string); ok && len(reasons) < policy.MaxReasons {
						reasons = append(reasons, s)
					}
				}
			}
			if ae, ok := c["ear.veraison.annotated-evidence"].(map[string]any); ok {
				for k := range ae {
					if k != "report_data" && k != "runtime_data_claims" && k != "init_data" {
						tee = k
					}
				}
				if tc, ok := ae[string(protocol.TeeTPM)].(map[string]any); ok {
					tpmAK, _ = tc["ak_public"].(string)
					if rd, ok := tc["report_data"].(string); ok {
						tpmRD, _ = hex.DecodeString(rd)
					}
				}
			}
		}
	}
	return &grant{input: in, teePubKey: v.TeePubKey, status: v.Status, tee: tee, expires: v.Expiry, reasons: reasons,
		tpmAK: tpmAK, tpmReportData: tpmRD,
		size: len(v.Payload) + grantOverhead}, nil
}

// credentials finds the caller's grant: a bearer EAR token, else an attested session.
func (s *Server) credentials(w http.ResponseWriter, r *http.Request) (*grant, string) {
	now := s.o.now()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			writeError(w, http.StatusUnauthorized, protocol.ErrTokenInvalid, "Authorization header is not a Bearer token")
			return nil, ""
		}
		tok = strings.TrimSpace(tok)
		g, ok := s.tokens.get(tok)
		if !ok {
			v, err := s.o.signer.Verify(tok, now)
			if err != nil && s.o.issuers != nil {
				var ierr error
				if v, ierr = s.o.issuers.Verify(tok, now); ierr == nil {
					err = nil
				} else {
					err = fmt.Errorf("%v; nor by a trusted issuer: %w", err, ierr)
				}
			}
			if err != nil {
				writeError(w, http.StatusUnauthorized, protocol.ErrTokenInvalid, "attestation token rejected: "+err.Error())
				return nil, ""
			}
			if g, err = grantOf(v); err != nil {
				writeError(w, http.StatusUnauthorized, protocol.ErrTokenInvalid, "attestation token claims: "+err.Error())
				return nil, ""
			}
			s.tokens.put(tok, g, now)
		}
		if !now.Before(g.expires) {
			writeError(w, http.StatusUnauthorized, protocol.ErrTokenInvalid, "attestation token expired: attest again")
			return nil, ""
		}
		return g, "bearer"
	}
	sess := s.session(w, r)
	if sess == nil {
		return nil, ""
	}
	g := sess.grant
	if !now.Before(g.expires) {
		writeError(w, http.StatusUnauthorized, protocol.ErrTokenInvalid, "session's attestation token expired: attest again")
		return nil, ""
	}
	return g, sessionLogID(sess.id)
}

func (s *Server) handleGetResource(w http.ResponseWriter, r *http.Request, rest string) {
	p, err := protocol.ParseResourcePath(rest)
	if err != nil {
		s.m.denials.WithLabelValues("invalid_path").Inc()
		writeError(w, http.StatusNotFound, protocol.ErrInvalidPath, fmt.Sprintf("invalid resource path %q: want <repo>/<type>/<tag> matching [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*", rest))
		return
	}
	g, who := s.credentials(w, r)
	if g == nil {
		s.m.denials.WithLabelValues("unauthenticated").Inc()
		return
	}
	audit := func(decision, reason string) {
		s.o.logger.LogAttrs(r.Context(), slog.LevelInfo, "kbs audit",
			slog.String("session", who), slog.String("tee", g.tee), slog.String("resource", p.String()),
			slog.String("decision", decision), slog.String("reason", reason))
	}
	if p.Repo == protocol.KeyTransferRepo && p.Type == protocol.KeyTransferType {
		// Keys made for SecL's transfer leave only wrapped to a certified
		// TPM binding key (keytransfer.go), never sealed to a tee-pubkey
		// any software can hold.
		s.m.denials.WithLabelValues("transfer_only").Inc()
		audit("deny", "a key transfer key: only POST "+protocol.PathKeyTransfer+"<id>"+protocol.PathTransferSuffix+" releases it")
		writeError(w, http.StatusUnauthorized, protocol.ErrPolicyDeny, fmt.Sprintf("%s is released only by the TPM key transfer (POST %s%s%s), not as a resource", p, protocol.PathKeyTransfer, p.Tag, protocol.PathTransferSuffix))
		return
	}
	if g.teePubKey == nil {
		s.m.denials.WithLabelValues("no_tee_key").Inc()
		audit("deny", "no tee-pubkey in token")
		writeError(w, http.StatusUnauthorized, protocol.ErrTeePubKey, "attestation token carries no tee-pubkey to seal the resource to")
		return
	}
	allow, err := s.o.engine.Allow(r.Context(), g.input, p, r.URL.Query())
	if err != nil {
		s.m.denials.WithLabelValues("policy_error").Inc()
		audit("deny", "policy error")
		writeError(w, http.StatusUnauthorized, protocol.ErrPolicyEngine, err.Error())
		return
	}
	if !allow {
		s.m.denials.WithLabelValues("policy").Inc()
		why := ""
		if len(g.reasons) > 0 {
			why = ": " + strings.Join(g.reasons, "; ")
		}
		audit("deny", "resource policy (ear.status "+g.status+why+")")
		// The client asked for p and names it; the detail need not repeat it.
		writeError(w, http.StatusUnauthorized, protocol.ErrPolicyDeny, fmt.Sprintf("access denied by the resource policy (ear.status %s%s)", g.status, why))
		return
	}
	data, err := s.o.store.Get(r.Context(), p)
	if err != nil {
		s.m.denials.WithLabelValues("not_found").Inc()
		audit("deny", "no such resource")
		if errors.Is(err, spec.ErrNotFound) {
			writeError(w, http.StatusUnauthorized, protocol.ErrResourceNotFound, fmt.Sprintf("no resource %s", p))
		} else {
			s.storeFailed(w, "reading resource "+p.String(), err)
		}
		return
	}
	resp, err := g.seal(data)
	clear(data)
	if err != nil {
		s.m.denials.WithLabelValues("seal").Inc()
		audit("deny", "cannot seal to tee key")
		writeError(w, http.StatusUnauthorized, protocol.ErrTeePubKey, "sealing to the tee key failed: "+err.Error())
		return
	}
	s.m.releases.Inc()
	audit("release", "allowed by resource policy")
	writeJSON(w, http.StatusOK, resp)
}

// jsonSize is the length of v as JSON.
func jsonSize(v any) (int, error) {
	var n countWriter
	err := json.NewEncoder(&n).Encode(v)
	return int(n), err
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// peek returns a live, unspent challenge.
func (s *Server) peek(ctx context.Context, id string, now time.Time) (*session, error) {
	c, err := s.state.PeekChallenge(ctx, id, now)
	if err != nil {
		return nil, err
	}
	return sessionOf(id, c), nil
}

// spend uses up the one attempt of the caller's live challenge and returns it.
func (s *Server) spend(ctx context.Context, id string, now time.Time) (*session, error) {
	c, err := s.state.SpendChallenge(ctx, id, now)
	if err != nil {
		return nil, err
	}
	return sessionOf(id, c), nil
}

func sessionOf(id string, c store.Challenge) *session {
	return &session{id: id, tee: protocol.Tee(c.Tee), nonce: c.Nonce, expires: c.Expires, addr: c.Addr}
}

// validSessionID reports whether id has the form newSessionID gives.
func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
