package ttrpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/coffer-dev/coffer/agent/evidence"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
)

// Bounds on AA request fields.
const (
	maxRuntimeData = 4096
	maxEventField  = 4096
	maxToken       = 64 << 10
)

// EventDomain is the AAEL domain of CoCo's own events (PullImage).
const EventDomain = "github.com/confidential-containers"

// TokenConfig is aa.toml's [token_configs]: where GetToken gets tokens.
type TokenConfig struct {
	// CoCoASURL is the CoCo attestation service of token type coco_as
	// (http(s)://host:port); "" refuses coco_as.
	CoCoASURL string
	// HTTPClient posts to CoCoASURL. Default: 30 s timeout, no redirects.
	HTTPClient *http.Client
}

type aaService struct{ s *Server }

func (a *aaService) fail(what string, err error) error { return rpcError(a.s.o.log, "AA", what, err) }

// GetEvidence implements AttestationAgentService: the primary attester's
// evidence over RuntimeData (guest-components passes it as report data).
func (a *aaService) GetEvidence(ctx context.Context, req *aa.GetEvidenceRequest) (*aa.GetEvidenceResponse, error) {
	rd := req.GetRuntimeData()
	if len(rd) > maxRuntimeData {
		return nil, a.fail("get evidence", badInput("RuntimeData of %d bytes (at most %d)", len(rd), maxRuntimeData))
	}
	ev, err := a.s.att.Evidence(ctx, rd)
	if err != nil {
		return nil, a.fail("get evidence", err)
	}
	return &aa.GetEvidenceResponse{Evidence: ev}, nil
}

// GetAdditionalEvidence implements AttestationAgentService: the evidence
// of each additional attester over RuntimeData, as a JSON object keyed by
// TEE; empty (no bytes) without additional attesters, as guest-components
// answers then.
func (a *aaService) GetAdditionalEvidence(ctx context.Context, req *aa.GetAdditionalEvidenceRequest) (*aa.GetEvidenceResponse, error) {
	rd := req.GetRuntimeData()
	if len(rd) > maxRuntimeData {
		return nil, a.fail("get additional evidence", badInput("RuntimeData of %d bytes (at most %d)", len(rd), maxRuntimeData))
	}
	if len(a.s.o.additional) == 0 {
		return &aa.GetEvidenceResponse{Evidence: []byte{}}, nil
	}
	all := map[string]json.RawMessage{}
	for _, att := range a.s.o.additional {
		ev, err := att.Evidence(ctx, rd)
		if err != nil {
			return nil, a.fail("get additional evidence", fmt.Errorf("%s: %w", att.Tee(), err))
		}
		all[att.Tee()] = ev
	}
	out, err := json.Marshal(all)
	if err != nil {
		return nil, a.fail("get additional evidence", err)
	}
	return &aa.GetEvidenceResponse{Evidence: out}, nil
}

// GetToken implements AttestationAgentService. TokenType kbs: the broker's
// attestation token as {"token":"…"} (guest-components also returns
// "tee_keypair", the tee private key; coffer never hands it out). coco_as:
// the CoCo attestation service's answer to the evidence.
func (a *aaService) GetToken(ctx context.Context, req *aa.GetTokenRequest) (*aa.GetTokenResponse, error) {
	tok, err := a.s.GetToken(ctx, req.GetTokenType())
	if err != nil {
		return nil, a.fail("get token", err)
	}
	return &aa.GetTokenResponse{Token: tok}, nil
}

// GetToken returns a token of type kbs or coco_as.
func (s *Server) GetToken(ctx context.Context, tokenType string) ([]byte, error) {
	switch tokenType {
	case "kbs":
		tok, err := s.c.Token(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(struct {
			Token string `json:"token"`
		}{tok})
	case "coco_as":
		return s.cocoASToken(ctx)
	}
	if len(tokenType) > 64 {
		tokenType = tokenType[:64] + "…"
	}
	return nil, badInput("unsupported token type %q (want kbs or coco_as)", tokenType)
}

// cocoASToken posts the evidence to the CoCo attestation service's
// /attestation as guest-components' CoCoASTokenGetter does.
func (s *Server) cocoASToken(ctx context.Context) ([]byte, error) {
	cfg := s.o.tokenCfg
	if cfg.CoCoASURL == "" {
		return nil, fmt.Errorf("token type coco_as: no attestation service configured (aa.toml [token_configs.coco_as] url): %w", errUnimplemented)
	}
	ev, err := s.att.Evidence(ctx, nil)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]any{
		"verification_requests": []map[string]string{{
			"tee":      s.att.Tee(),
			"evidence": base64.RawURLEncoding.EncodeToString(ev),
		}},
		"policy_ids": []string{},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cfg.CoCoASURL, "/")+"/attestation", bytes.NewReader(body))
	if err != nil {
		return nil, badInput("coco_as url: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("coco_as: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxToken+1))
	if err != nil {
		return nil, fmt.Errorf("coco_as: %w", err)
	}
	if len(out) > maxToken {
		return nil, fmt.Errorf("coco_as: answer larger than %d bytes", maxToken)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("coco_as: remote attestation failed: %s: %.200q", resp.Status, out)
	}
	return out, nil
}

// ExtendRuntimeMeasurement implements AttestationAgentService.
func (a *aaService) ExtendRuntimeMeasurement(ctx context.Context, req *aa.ExtendRuntimeMeasurementRequest) (*aa.ExtendRuntimeMeasurementResponse, error) {
	var idx *uint64
	if req.RegisterIndex != nil {
		v := req.GetRegisterIndex()
		idx = &v
	}
	r, err := a.s.ExtendRuntimeMeasurement(ctx, req.GetDomain(), req.GetOperation(), req.GetContent(), idx)
	if err != nil {
		return nil, a.fail("extend runtime measurement", err)
	}
	return &aa.ExtendRuntimeMeasurementResponse{Result: r}, nil
}

// ExtendRuntimeMeasurement records the event "domain operation content" in
// the AAEL and extends register index (nil: the configured default, PCR
// 17) with its digest. Without an event log it answers NOT_ENABLED; on a
// TEE without runtime registers (the sample TEE), NOT_SUPPORTED.
func (s *Server) ExtendRuntimeMeasurement(ctx context.Context, domain, operation, content string, index *uint64) (aa.RuntimeMeasurementResult, error) {
	for _, f := range []struct{ name, v string }{{"Domain", domain}, {"Operation", operation}, {"Content", content}} {
		if f.v == "" || len(f.v) > maxEventField {
			return 0, badInput("%s must be 1 to %d bytes", f.name, maxEventField)
		}
		if strings.ContainsAny(f.v, "\n\r") || (f.name != "Content" && strings.Contains(f.v, " ")) {
			return 0, badInput("%s %.64q contains a newline or (domain, operation) a space", f.name, f.v)
		}
	}
	if s.evlog == nil {
		return aa.RuntimeMeasurementResult_NOT_ENABLED, nil
	}
	if s.evlog.regs == nil {
		return aa.RuntimeMeasurementResult_NOT_SUPPORTED, nil
	}
	pcr := s.o.pcr
	if index != nil {
		pcr = *index
	}
	s.evlogMu.Lock()
	defer s.evlogMu.Unlock()
	if err := s.evlog.extend(ctx, pcr, domain+" "+operation+" "+content); err != nil {
		return 0, err
	}
	return aa.RuntimeMeasurementResult_OK, nil
}

// BindInitData implements AttestationAgentService (BindInitDataDigest).
func (a *aaService) BindInitData(ctx context.Context, req *aa.BindInitDataRequest) (*aa.BindInitDataResponse, error) {
	if _, err := BindInitDataDigest(ctx, a.s.att, req.GetDigest()); err != nil {
		return nil, a.fail("bind init data", err)
	}
	return &aa.BindInitDataResponse{}, nil
}

// BindInitDataDigest binds an init-data digest to the TEE, as
// guest-components' attesters do for BindInitData and for the AA's
// --initdata_digest / --initdata_toml at start: on a TPM the digest
// extends PCR 8 (bound is true). TEEs that bind init-data in hardware
// (TDX mr_config_id, SNP host_data) and the sample TEE report bound false
// (guest-components' InitDataResult::Unsupported): there the broker
// checks the hardware field against the init-data at attestation.
func BindInitDataDigest(ctx context.Context, att evidence.Attester, digest []byte) (bound bool, err error) {
	if len(digest) == 0 || len(digest) > 64 {
		return false, badInput("Digest: an init-data digest of %d bytes (want 1 to 64)", len(digest))
	}
	regs := RegistersFor(att)
	if regs == nil {
		return false, nil
	}
	if err := regs.Extend(ctx, InitDataPCR, digest); err != nil {
		return false, err
	}
	return true, nil
}

// InitDataPCR is the TPM PCR init-data is bound to.
const InitDataPCR = 8

// GetTeeType implements AttestationAgentService.
func (a *aaService) GetTeeType(context.Context, *aa.GetTeeTypeRequest) (*aa.GetTeeTypeResponse, error) {
	return &aa.GetTeeTypeResponse{Tee: a.s.att.Tee()}, nil
}

// GetAdditionalTees implements AttestationAgentService: the additional
// attesters' TEEs (WithAdditionalAttesters), in the order given.
func (a *aaService) GetAdditionalTees(context.Context, *aa.GetAdditionalTeesRequest) (*aa.GetAdditionalTeesResponse, error) {
	tees := []string{}
	for _, att := range a.s.o.additional {
		tees = append(tees, att.Tee())
	}
	return &aa.GetAdditionalTeesResponse{AdditionalTees: tees}, nil
}
