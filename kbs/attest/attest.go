// Package attest verifies TEE evidence for the broker. A Verifier checks one
// TEE type's evidence, including that it binds the expected report data
// (protocol.ReportDataDigest), and returns the claims it vouches for; the
// attestation policy then turns those claims into an EAR trust vector.
package attest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Evidence is what a Verifier examines.
type Evidence struct {
	Tee        protocol.Tee
	Primary    json.RawMessage // tee-evidence.primary_evidence
	Additional string          // tee-evidence.additional_evidence
	// ReportData is the SHA-384 digest the evidence must carry (see
	// protocol.ReportDataDigest); verifiers pad or truncate it to the
	// platform's report-data size.
	ReportData []byte
	// Nonce is the session's challenge (the tpm verifier's credential
	// activation is bound to it).
	Nonce    string
	InitData *protocol.InitData
	// NoBinding lets an offline check (coffer kbs verify-evidence without
	// --report-data) skip the report-data comparison. A verifier given
	// neither ReportData nor NoBinding refuses the evidence; the broker
	// never sets it.
	NoBinding bool
}

// Config configures the verifiers New returns.
type Config struct {
	// AllowSample accepts the sample TEE, which has no root of trust: for
	// development only (coffer kbs serve --allow-sample-tee).
	AllowSample bool
	// Now is the time certificates, CRLs and collateral are judged at.
	// Default: time.Now.
	Now func() time.Time
	// Collateral is a directory of operator-supplied collateral (AMD
	// ARK/ASK/VCEK/VLEK certificates and CRLs, Intel TCB info, QE identity,
	// PCK CRLs). Verifiers never fetch anything unless FetchCollateral.
	Collateral string
	// FetchCollateral allows fetching what Collateral lacks from AMD KDS or
	// Intel PCS.
	FetchCollateral bool
	// AllowDebug accepts SNP and TDX guests whose debug policy bit is set.
	AllowDebug bool
	// CacheBytes bounds what each verifier remembers of per-platform
	// checks that passed (SNP certificate chains, parsed certificates, TDX
	// collateral files): 0 = DefaultCacheBytes, negative = no cache.
	CacheBytes int64

	cache *checkCache // the verifier's own, set by its constructor (NewSNP, NewTDX)
	// EKRoots are the certificate authorities whose EK certificates the
	// tpm verifier trusts (kbs serve --tpm-ek-ca): a TPM whose EK chains
	// to one and whose AK passes credential activation is vouched for
	// without an AK pin. Nil: EKs are not trusted, AKs must be pinned.
	EKRoots *x509.CertPool
	// ActivationKey keys the credential-activation secrets the tpm
	// verifier derives from each session's nonce. Empty: New draws one
	// (a broker's replicas sharing sessions must share it).
	ActivationKey []byte
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// New returns a verifier for every TEE in the table (tpm, snp, tdx), and
// the development ones (sample) only when cfg.AllowSample.
func New(cfg Config) Verifiers {
	if len(cfg.ActivationKey) == 0 {
		cfg.ActivationKey = make([]byte, 32)
		rand.Read(cfg.ActivationKey)
	}
	v := Verifiers{}
	for _, t := range table {
		if !t.Development || cfg.AllowSample {
			v[t.Name] = t.New(cfg)
		}
	}
	return v
}

// Claims are the verified evidence claims of one TEE.
type Claims = map[string]any

// Verifier checks one TEE type's evidence. Failures wrap spec.ErrIntegrity
// (bad evidence or binding) or spec.ErrUnsupported (malformed input).
type Verifier interface {
	Verify(ctx context.Context, ev Evidence) (Claims, error)
}

// Challenger is a Verifier that takes part in /auth: from the request's
// extra-params it makes the challenge's extra-params for the session
// whose nonce is given (the tpm verifier seals a credential to the EK and
// AK the guest sent). A request without extra-params gets "".
type Challenger interface {
	Challenge(ctx context.Context, nonce string, extraParams json.RawMessage) (json.RawMessage, error)
}

// Challenge returns the challenge's extra-params for tee: the verifier's,
// when it is a Challenger, else "".
func (v Verifiers) Challenge(ctx context.Context, tee protocol.Tee, nonce string, extra json.RawMessage) (json.RawMessage, error) {
	if c, ok := v[tee].(Challenger); ok {
		return c.Challenge(ctx, nonce, extra)
	}
	return json.RawMessage(`""`), nil
}

// Verifiers selects a Verifier by TEE type.
type Verifiers map[protocol.Tee]Verifier

// Default returns New(Config{}): hardware verifiers only.
func Default() Verifiers { return New(Config{}) }

// Supports reports whether tee has a verifier.
func (v Verifiers) Supports(tee protocol.Tee) bool { _, ok := v[tee]; return ok }

// Verify dispatches to the verifier of ev.Tee; an unknown tee wraps spec.ErrUnsupported.
func (v Verifiers) Verify(ctx context.Context, ev Evidence) (Claims, error) {
	ver, ok := v[ev.Tee]
	if !ok {
		return nil, fmt.Errorf("no verifier for tee %q: %w", ev.Tee, spec.ErrUnsupported)
	}
	return ver.Verify(ctx, ev)
}

// Sample verifies the evidence of the reference "sample" TEE, which has no
// hardware root of trust: {"svn":"1","report_data":"<std base64>"}. The
// report data must equal the expected digest (48 bytes) or its 64-byte
// zero-padded form. It vouches for fixed claims like the reference:
// launch_digest "abcde", platform_version 1.4, debug false. When the
// request carries init-data, the claim "init_data" is the std base64 of its
// digest (InitDataDigest), as the reference emits it; the sample TEE has no
// root of trust, so nothing it claims is bound to hardware. Evidence may also
// carry "init_data" (std base64 of the digest): then it must match.
type Sample struct{}

// maxSVN bounds the sample evidence's svn, a version number as a string:
// every claim a verifier copies from evidence has a bound.
const maxSVN = 32

type sampleEvidence struct {
	SVN        string `json:"svn"`
	ReportData string `json:"report_data"`
	InitData   string `json:"init_data,omitempty"`
}

// Verify implements Verifier.
func (Sample) Verify(_ context.Context, ev Evidence) (Claims, error) {
	var se sampleEvidence
	if err := json.Unmarshal(ev.Primary, &se); err != nil {
		return nil, fmt.Errorf("sample evidence: %v: %w", err, spec.ErrUnsupported)
	}
	if len(se.SVN) > maxSVN {
		return nil, fmt.Errorf("sample evidence svn of %d bytes, at most %d: %w", len(se.SVN), maxSVN, spec.ErrUnsupported)
	}
	rd, err := base64.StdEncoding.DecodeString(se.ReportData)
	if err != nil {
		return nil, fmt.Errorf("sample evidence report_data: not base64: %w", spec.ErrIntegrity)
	}
	if len(ev.ReportData) == 0 {
		return nil, fmt.Errorf("sample evidence: no expected report data: %w", spec.ErrIntegrity)
	}
	want := ev.ReportData
	if len(rd) == 64 {
		want = protocol.ReportData(ev.ReportData, 64)
	}
	if subtle.ConstantTimeCompare(rd, want) != 1 {
		return nil, fmt.Errorf("sample evidence report_data does not bind this nonce and tee key: %w", spec.ErrIntegrity)
	}
	c := Claims{
		"svn":              se.SVN,
		"report_data":      se.ReportData,
		"launch_digest":    "abcde",
		"platform_version": map[string]any{"major": 1, "minor": 4},
		"debug":            false,
	}
	if ev.InitData != nil {
		want, err := InitDataDigest(ev.InitData)
		if err != nil {
			return nil, err
		}
		if se.InitData != "" {
			bound, err := base64.StdEncoding.DecodeString(se.InitData)
			if err != nil {
				return nil, fmt.Errorf("sample evidence init_data: not base64: %w", spec.ErrIntegrity)
			}
			if len(bound) > len(want) {
				want = protocol.ReportData(want, len(bound))
			}
			if subtle.ConstantTimeCompare(bound, want) != 1 {
				return nil, fmt.Errorf("sample evidence init_data does not match the request's init-data: %w", spec.ErrIntegrity)
			}
		}
		c["init_data"] = base64.StdEncoding.EncodeToString(want)
	} else if se.InitData != "" {
		return nil, fmt.Errorf("sample evidence binds init-data but the request carries none: %w", spec.ErrIntegrity)
	}
	return c, nil
}

// SampleEvidence builds sample-TEE evidence carrying digest as report data,
// as the reference sample attester does (for clients and tests).
func SampleEvidence(svn string, digest []byte) json.RawMessage {
	raw, _ := json.Marshal(sampleEvidence{SVN: svn, ReportData: base64.StdEncoding.EncodeToString(digest)})
	return raw
}
