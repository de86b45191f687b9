// Package api serves the guest-side REST API of Confidential Containers'
// api-server-rest: the Confidential Data Hub's resource endpoint and the
// attestation agent's token and evidence endpoints, backed by coffer's
// RCAR client. Listen on loopback or a unix socket only (see Listen):
// whoever reaches it gets secrets. The handler refuses requests a web page
// could have sent (foreign Host over TCP, foreign Origin, cross-site fetch).
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Paths served.
const (
	PathResource = "/cdh/resource/" // + <repo>/<type>/<tag>
	PathToken    = "/aa/token"      // ?token_type=kbs
	PathEvidence = "/aa/evidence"   // ?runtime_data=…
)

// maxRuntimeData bounds the runtime_data query parameter.
const maxRuntimeData = 4096

type handler struct {
	c   *client.Client
	att evidence.Attester
	log *slog.Logger
}

type options struct {
	log     *slog.Logger
	allowed map[string]bool
}

// Option configures NewHandler.
type Option func(*options) error

// WithLogger logs one line per released resource (path and size, never the
// bytes) and per failed or refused request. Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithAllowedHosts adds names (DNS names or IP addresses, no port) accepted
// in the Host header of TCP requests and in Origin headers, besides the
// loopback ones (localhost, 127.0.0.0/8, ::1), which are always accepted.
// Default: loopback only. Allowing a name a web page can resolve to this
// agent (any public DNS name) re-opens DNS rebinding for that name.
func WithAllowedHosts(names ...string) Option {
	return func(o *options) error {
		for _, n := range names {
			h, err := normalizeAllowedHost(n)
			if err != nil {
				return err
			}
			o.allowed[h] = true
		}
		return nil
	}
}

// NewHandler returns the API handler: resources and tokens come from c
// (which attests when it has no valid token), evidence from att.
//
// The token endpoint answers {"token":"<EAR JWT>"}. guest-components'
// api-server-rest also returns "tee_keypair", the PEM of the tee private key
// the resources are sealed to; coffer never hands that key out, so the field
// is absent.
//
// Every request first passes the DNS-rebinding guard: over TCP its Host must
// be loopback or allowed (WithAllowedHosts); an Origin header must name a
// loopback or allowed host; Sec-Fetch-Site: cross-site is refused. Refusals
// are 403 with a one-line body naming the refused value.
func NewHandler(c *client.Client, att evidence.Attester, opts ...Option) (http.Handler, error) {
	o := options{log: slog.New(slog.DiscardHandler), allowed: map[string]bool{}}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("agent api: %w", err)
		}
	}
	h := &handler{c: c, att: att, log: o.log}
	mux := http.NewServeMux()
	mux.HandleFunc(PathResource, h.resource)
	mux.HandleFunc(PathToken, h.token)
	mux.HandleFunc(PathEvidence, h.evidence)
	return &guard{next: mux, allowed: o.allowed, log: o.log}, nil
}

func (h *handler) resource(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "METHOD NOT ALLOWED", http.StatusMethodNotAllowed)
		return
	}
	p, err := protocol.ParseResourcePath(strings.TrimPrefix(r.URL.Path, PathResource))
	if err != nil {
		http.Error(w, "BAD REQUEST: resource path must be <repo>/<type>/<tag>", http.StatusBadRequest)
		return
	}
	data, err := h.c.Get(r.Context(), p)
	if err != nil {
		h.fail(w, "resource "+p.String(), err)
		return
	}
	h.log.Info("cdh: resource released", "resource", p.String(), "bytes", len(data))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(data)
}

func (h *handler) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "METHOD NOT ALLOWED", http.StatusMethodNotAllowed)
		return
	}
	if tt := r.URL.Query().Get("token_type"); tt != "kbs" {
		http.Error(w, fmt.Sprintf("BAD REQUEST: token_type %q is not supported (only kbs)", tt), http.StatusBadRequest)
		return
	}
	tok, err := h.c.Token(r.Context())
	if err != nil {
		h.fail(w, "token", err)
		return
	}
	// The reference also returns the tee key pair (PEM) here; coffer keeps
	// the private key inside the agent and returns only the token.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Token string `json:"token"`
	}{tok})
}

func (h *handler) evidence(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "METHOD NOT ALLOWED", http.StatusMethodNotAllowed)
		return
	}
	rd := r.URL.Query().Get("runtime_data")
	if rd == "" || len(rd) > maxRuntimeData {
		http.Error(w, fmt.Sprintf("BAD REQUEST: runtime_data is required (at most %d bytes)", maxRuntimeData), http.StatusBadRequest)
		return
	}
	ev, err := h.att.Evidence(r.Context(), []byte(rd))
	if err != nil {
		h.fail(w, "evidence", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(ev)
}

// fail maps an error to a status: 403 denied, 404 missing, 400 unsupported,
// 502 for a broker that cannot be reached or answered badly.
func (h *handler) fail(w http.ResponseWriter, what string, err error) {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, spec.ErrPolicyDenied):
		status = http.StatusForbidden
	case errors.Is(err, spec.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, spec.ErrUnsupported):
		status = http.StatusBadRequest
	}
	h.log.Warn("cdh: request failed", "what", what, "status", status, "error", err)
	http.Error(w, err.Error(), status)
}
