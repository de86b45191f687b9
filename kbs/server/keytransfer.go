package server

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// handleKeyTransfer is SecL's key transfer to a TPM (see
// protocol.KeyTransferRequest): the caller's grant must come from a tpm
// attestation; the binding key must be certified by that attestation's AK
// with the attestation's report data as qualifying data (so a
// certification cannot be replayed into another attestation); the resource
// policy decides as for a resource GET on secl/keys/<uuid>; the key goes
// back wrapped with RSA-OAEP (SHA-256, label "TPM2\0") to the binding key,
// which only that TPM can unwrap.
func (s *Server) handleKeyTransfer(w http.ResponseWriter, r *http.Request, rest string) {
	id, ok := strings.CutSuffix(rest, protocol.PathTransferSuffix)
	p := protocol.ResourcePath{Repo: protocol.KeyTransferRepo, Type: protocol.KeyTransferType, Tag: id}
	if !ok || p.Validate() != nil {
		s.m.denials.WithLabelValues("invalid_path").Inc()
		writeError(w, http.StatusNotFound, protocol.ErrInvalidPath, fmt.Sprintf("invalid key transfer path %q: want /kbs/v1/keys/<id>/transfer", r.URL.Path))
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
			slog.String("op", "tpm key transfer"), slog.String("decision", decision), slog.String("reason", reason))
	}
	deny := func(metric, variant, detail string) {
		s.m.denials.WithLabelValues(metric).Inc()
		audit("deny", detail)
		writeError(w, http.StatusUnauthorized, variant, detail)
	}
	if g.tee != string(protocol.TeeTPM) || g.tpmAK == "" || len(g.tpmReportData) == 0 {
		deny("no_tpm", protocol.ErrPolicyDeny, "key transfer to a TPM needs a tpm attestation (this token is from tee \""+g.tee+"\")")
		return
	}
	var req protocol.KeyTransferRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	pub, err1 := decodeBounded(req.BindingKey.Public, attest.MaxTPMPublic)
	info, err2 := decodeBounded(req.BindingKey.CertifyInfo, attest.MaxTPMCertifyInfo)
	sig, err3 := decodeBounded(req.BindingKey.Signature, attest.MaxTPMSignature)
	if err := errors.Join(err1, err2, err3); err != nil {
		writeError(w, http.StatusBadRequest, protocol.ErrInvalidRequest, "binding_key: "+err.Error())
		return
	}
	key, err := attest.VerifyTPMBindingKey(g.tpmAK, pub, info, sig, g.tpmReportData)
	if err != nil {
		deny("binding_key", protocol.ErrAttestFailed, "binding key refused: "+err.Error())
		return
	}
	rdHex := hex.EncodeToString(g.tpmReportData)
	if !s.spentTx.claim(rdHex, g.expires, s.o.now()) {
		deny("transfer_replay", protocol.ErrPolicyDeny, "this attestation already had its key transfer: attest again (one transfer per nonce)")
		return
	}
	released := false
	defer func() {
		if !released {
			s.spentTx.unclaim(rdHex) // refused or failed: the host may retry within its session
		}
	}()
	allow, err := s.o.engine.Allow(r.Context(), g.input, p, r.URL.Query())
	if err != nil {
		deny("policy_error", protocol.ErrPolicyEngine, err.Error())
		return
	}
	if !allow {
		why := ""
		if len(g.reasons) > 0 {
			why = ": " + strings.Join(g.reasons, "; ")
		}
		deny("policy", protocol.ErrPolicyDeny, fmt.Sprintf("access to %s denied by the resource policy (ear.status %s%s)", p, g.status, why))
		return
	}
	data, err := s.o.store.Get(r.Context(), p)
	if err != nil {
		if errors.Is(err, spec.ErrNotFound) {
			deny("not_found", protocol.ErrResourceNotFound, fmt.Sprintf("no key %s", id))
		} else {
			s.storeFailed(w, "reading key "+p.String(), err) // 503 when the store is unreachable
		}
		return
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, key, data, []byte(protocol.TPMOAEPLabel))
	clear(data)
	if err != nil {
		deny("seal", protocol.ErrTeePubKey, "wrapping to the binding key failed: "+err.Error())
		return
	}
	digest := sha256.Sum256(wrapped)
	payload, _ := json.Marshal(protocol.KeyTransferProof{ReportData: rdHex, KeyID: id,
		WrappedKeySHA256: base64.StdEncoding.EncodeToString(digest[:]), IssuedAt: s.o.now().Unix()})
	proof, err := s.o.signer.SignJWS(protocol.TransferProofType, payload)
	if err != nil {
		deny("seal", protocol.ErrInternal, "signing the transfer proof failed")
		return
	}
	released = true
	s.m.releases.Inc()
	audit("release", "wrapped to the certified TPM binding key")
	writeJSON(w, http.StatusOK, protocol.KeyTransferResponse{WrappedKey: base64.StdEncoding.EncodeToString(wrapped), Proof: proof})
}

// maxSpentTransfers bounds the attestations remembered as having had
// their transfer (each until its token expires).
const maxSpentTransfers = 100_000

// spentTransfers remembers, by report data, the attestations whose key
// transfer happened, so a transfer cannot be repeated within its session
// (or with the session's bearer token). Per broker process: replicas
// sharing a store each keep their own.
type spentTransfers struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// claim marks rd as transferred until expires; false if it already was
// (or the table is full of live entries).
func (t *spentTransfers) claim(rd string, expires, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]time.Time{}
	}
	if exp, ok := t.m[rd]; ok && now.Before(exp) {
		return false
	}
	if len(t.m) >= maxSpentTransfers {
		for k, exp := range t.m {
			if !now.Before(exp) {
				delete(t.m, k)
			}
		}
		if len(t.m) >= maxSpentTransfers {
			return false
		}
	}
	t.m[rd] = expires
	return true
}

func (t *spentTransfers) unclaim(rd string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, rd)
}

// decodeBounded decodes std base64 of at most max decoded bytes.
func decodeBounded(s string, max int) ([]byte, error) {
	if s == "" {
		return nil, errors.New("a member is missing")
	}
	if len(s) > base64.StdEncoding.EncodedLen(max) {
		return nil, fmt.Errorf("a member exceeds %d bytes", max)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("a member is not std base64")
	}
	return b, nil
}
