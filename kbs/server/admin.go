package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

// adminTarget is what an admin call touches, for role-scoped tokens.
type adminTarget int

const (
	targetSettings adminTarget = iota // policies, reference values: unscoped tokens only
	targetResource                    // one resource path (rest)
	targetList                        // the resource list: filtered by scope
)

// adminScope is what an admin token may touch: every pattern set (the
// broker's ACL for the token's role, the token's own allow_paths) must
// admit a resource path. No sets: unscoped.
type adminScope struct {
	sets [][]string
}

func (sc adminScope) scoped() bool { return len(sc.sets) > 0 }

func (sc adminScope) allows(p string) bool {
	for _, set := range sc.sets {
		if !token.MatchPath(set, p) {
			return false
		}
	}
	return true
}

// admin authenticates and authorizes an admin call and runs next, or
// answers 401 (bad token) / 403 (token not allowed this target) / 503.
func (s *Server) admin(w http.ResponseWriter, r *http.Request, target adminTarget, rest string, next func(adminScope)) {
	if s.o.insecureAdmin {
		s.o.logger.Warn("kbs admin call NOT authenticated (insecure admin mode)", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		next(adminScope{})
		s.auditAdmin(w, r, "insecure-admin")
		return
	}
	if r.TLS == nil && !isLoopback(r.RemoteAddr) {
		s.o.logger.Warn("kbs admin refused", "remote", r.RemoteAddr, "reason", "plain HTTP from a non-loopback address")
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin API refused over plain HTTP from a non-loopback address: use TLS")
		return
	}
	if len(s.o.adminKeys) == 0 {
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin API disabled: the broker has no admin public key configured")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin call without a Bearer admin token")
		return
	}
	now := s.o.now()
	c, err := token.VerifyAdmin(strings.TrimSpace(tok), s.o.adminKeys, token.AdminCheck{MaxTTL: s.o.adminMaxTTL}, now)
	var sc adminScope
	if err == nil {
		acl, inACL := s.o.adminACL[c.Role]
		if s.o.adminRole != "" && c.Role != s.o.adminRole && !inACL {
			err = fmt.Errorf("admin token role %q, need %q or a role of the broker's admin ACL: %w", c.Role, s.o.adminRole, spec.ErrPolicyDenied)
		}
		if inACL {
			sc.sets = append(sc.sets, acl)
		}
		if len(c.AllowPaths) > 0 {
			sc.sets = append(sc.sets, c.AllowPaths)
		}
	}
	if err != nil {
		s.o.logger.Warn("kbs admin refused", "remote", r.RemoteAddr, "reason", err.Error())
		writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin token rejected: "+err.Error())
		return
	}
	actor := fmt.Sprintf("role=%q jti=%s", c.Role, c.ID)
	if deny := sc.deny(target, rest); deny != "" {
		s.o.logger.Warn("kbs admin refused", "remote", r.RemoteAddr, "role", c.Role, "reason", deny)
		writeError(w, http.StatusForbidden, protocol.ErrAdminAuth, deny)
		s.auditAdmin(w, r, actor)
		return
	}
	if r.Method != http.MethodGet {
		if err := s.useAdminID(r.Context(), c, now); err != nil {
			if errors.Is(err, store.ErrUnavailable) {
				s.storeFailed(w, "recording the admin token", err)
				return
			}
			s.o.logger.Warn("kbs admin refused", "remote", r.RemoteAddr, "reason", err.Error())
			writeError(w, http.StatusUnauthorized, protocol.ErrAdminAuth, "admin token rejected: "+err.Error())
			return
		}
	}
	s.o.logger.Info("kbs admin", "method", r.Method, "path", r.URL.Path, "role", c.Role)
	next(sc)
	s.auditAdmin(w, r, actor)
}

// deny says why a scoped token may not make this call, or "".
func (sc adminScope) deny(target adminTarget, rest string) string {
	if !sc.scoped() {
		return ""
	}
	switch target {
	case targetSettings:
		return "this admin token is scoped to resource paths: it cannot change policies or reference values"
	case targetResource:
		if !sc.allows(rest) {
			return fmt.Sprintf("this admin token may not touch resource %q (outside its allowed paths)", rest)
		}
	}
	return ""
}

// useAdminID spends the token's jti for a write in the state, which keeps
// it in the store, so it stays spent across restarts (fs) and replicas
// (postgres) until the token expires; only for a store that cannot (a
// Store of someone else's) does store.Local keep it in memory.
func (s *Server) useAdminID(ctx context.Context, c *token.AdminClaims, now time.Time) error {
	if c.ID == "" {
		return nil
	}
	if len(c.ID) > maxAdminIDLen {
		return fmt.Errorf("admin token jti longer than %d bytes", maxAdminIDLen)
	}
	err := s.state.UseAdminID(ctx, c.ID, time.Unix(c.Expiry, 0))
	if errors.Is(err, spec.ErrExists) {
		return errors.New("admin token already used for a write (jti replay): sign a new one")
	}
	return err
}

// auditAdmin records an admin call and its outcome: in the log always, and
// in the shared store when there is one.
func (s *Server) auditAdmin(w http.ResponseWriter, r *http.Request, actor string) {
	code := http.StatusOK
	if sw, ok := w.(*statusWriter); ok {
		code = sw.code
	}
	if r.Method == http.MethodGet {
		return
	}
	ev := store.AuditEvent{Time: s.o.now(), Actor: actor, Action: r.Method, Target: r.URL.Path, Result: strconv.Itoa(code)}
	if err := s.state.Audit(context.WithoutCancel(r.Context()), ev); err != nil {
		s.o.logger.Error("kbs admin audit record not stored", "err", err, "action", ev.Action, "target", ev.Target, "result", ev.Result)
	}
}

func (s *Server) adminPath(w http.ResponseWriter, rest string) (protocol.ResourcePath, bool) {
	p, err := protocol.ParseResourcePath(rest)
	if err != nil || strings.Count(rest, "/") != 2 {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidPath, fmt.Sprintf("invalid resource path %q: want <repo>/<type>/<tag> matching [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*", rest))
		return p, false
	}
	return p, true
}

func (s *Server) handleSetResource(w http.ResponseWriter, r *http.Request, rest string) {
	p, ok := s.adminPath(w, rest)
	if !ok {
		return
	}
	body, ok := s.readBody(w, r, s.o.maxResource)
	if !ok {
		return
	}
	// If-None-Match: * makes the write create-only (RFC 9110 §13.1.2), so a
	// client registering a new key can never replace one images depend on.
	createOnly := strings.TrimSpace(r.Header.Get("If-None-Match")) == "*"
	var err error
	if createOnly {
		err = s.o.store.Create(r.Context(), p, body)
	} else {
		err = s.o.store.Set(r.Context(), p, body)
	}
	if errors.Is(err, spec.ErrExists) {
		s.o.logger.Info("kbs audit", "resource", p.String(), "decision", "not replaced (create-only)")
		writeError(w, http.StatusPreconditionFailed, protocol.ErrResourceExists, fmt.Sprintf("resource %s already exists and the write was create-only", p))
		return
	}
	if err != nil {
		s.storeFailed(w, "storing resource "+p.String(), err)
		return
	}
	s.o.logger.Info("kbs audit", "resource", p.String(), "decision", "stored", "bytes", len(body))
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleDeleteResource(w http.ResponseWriter, r *http.Request, rest string) {
	p, ok := s.adminPath(w, rest)
	if !ok {
		return
	}
	if err := s.o.store.Delete(r.Context(), p); err != nil {
		if errors.Is(err, spec.ErrNotFound) {
			writeError(w, http.StatusNotFound, protocol.ErrResourceNotFound, fmt.Sprintf("no resource %s", p))
			return
		}
		s.storeFailed(w, "deleting resource "+p.String(), err)
		return
	}
	s.o.logger.Info("kbs audit", "resource", p.String(), "decision", "deleted")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleListResources(w http.ResponseWriter, r *http.Request, sc adminScope) {
	infos, err := s.o.store.List(r.Context())
	if err != nil {
		s.storeFailed(w, "listing resources", err)
		return
	}
	out := protocol.ResourceList{Resources: make([]protocol.ResourceInfo, 0, len(infos))}
	for _, in := range infos {
		if sc.allows(in.Path) {
			out.Resources = append(out.Resources, in)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// decodePolicy accepts base64url without padding (the reference) and, leniently, padded or standard base64.
func decodePolicy(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("policy is not base64url")
}

// PolicyRequest is the body of POST /kbs/v0/resource-policy.
type PolicyRequest struct {
	Policy string `json:"policy"` // base64url without padding of the Rego source
}

// AttestationPolicyRequest is the body of POST /kbs/v0/attestation-policy.
type AttestationPolicyRequest struct {
	Type     string `json:"type"` // "rego"
	PolicyID string `json:"policy_id"`
	Policy   string `json:"policy"` // base64url without padding
}

func (s *Server) handleSetResourcePolicy(w http.ResponseWriter, r *http.Request) {
	var req PolicyRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	src, err := decodePolicy(req.Policy)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, err.Error())
		return
	}
	if err := s.o.engine.SetResourcePolicy(r.Context(), string(src)); err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrPolicyEngine, "resource policy rejected, previous policy kept: "+err.Error())
		return
	}
	if err := s.state.SetResourcePolicy(r.Context(), string(src)); err != nil {
		s.resync() // back to what the store holds
		s.storeFailed(w, "storing the resource policy", err)
		return
	}
	s.o.logger.Info("kbs admin: resource policy set", "bytes", len(src))
	w.WriteHeader(http.StatusOK)
}

// handleGetResourcePolicy answers with the Rego source as text, as trustee
// did before it switched to listing policy ids.
func (s *Server) handleGetResourcePolicy(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, s.o.engine.ResourcePolicy())
}

func (s *Server) handleSetAttestationPolicy(w http.ResponseWriter, r *http.Request) {
	var req AttestationPolicyRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	if req.Type != "" && req.Type != "rego" {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, fmt.Sprintf("attestation policy type %q not supported, want rego", req.Type))
		return
	}
	src, err := decodePolicy(req.Policy)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, err.Error())
		return
	}
	if err := s.o.engine.SetAttestationPolicy(r.Context(), req.PolicyID, string(src)); err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrPolicyEngine, "attestation policy rejected, previous policy kept: "+err.Error())
		return
	}
	id, _ := s.o.engine.AttestationPolicy()
	if err := s.state.SetAttestationPolicy(r.Context(), id, string(src)); err != nil {
		s.resync()
		s.storeFailed(w, "storing the attestation policy", err)
		return
	}
	s.o.logger.Info("kbs admin: attestation policy set", "id", id, "bytes", len(src))
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleSetReferenceValue(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, s.o.maxBody)
	if !ok {
		return
	}
	// trustee's kbs-client wraps the RVPS message as {"message":"<json>"}; accept both.
	var wrapped struct {
		Message *string `json:"message"`
	}
	if json.Unmarshal(body, &wrapped) == nil && wrapped.Message != nil {
		body = []byte(*wrapped.Message)
	}
	values, err := policy.ParseRVPS(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "reference value rejected: "+err.Error())
		return
	}
	if err := s.state.SetReferenceValues(r.Context(), values); err != nil {
		s.storeFailed(w, "storing the reference values", err)
		return
	}
	for name, vs := range values {
		if err := s.o.engine.SetReferenceValue(r.Context(), name, vs); err != nil {
			writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "reference value rejected: "+err.Error())
			return
		}
	}
	s.o.logger.Info("kbs admin: reference values set")
	w.WriteHeader(http.StatusOK)
}

const maxAdminIDLen = 128
