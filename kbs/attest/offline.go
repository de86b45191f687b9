package attest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/google/go-sev-guest/abi"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// OfflineOption configures VerifyFile.
type OfflineOption func(*offlineOptions) error

type offlineOptions struct {
	cfg        Config
	cert       []byte
	reportData []byte
}

// WithCert supplies the VCEK or VLEK (DER or PEM) an SNP report was signed
// with, for a raw report or evidence whose cert_chain lacks it.
func WithCert(cert []byte) OfflineOption {
	return func(o *offlineOptions) error {
		if len(cert) == 0 || len(cert) > maxSNPCertBytes {
			return fmt.Errorf("certificate of %d bytes, want 1 to %d: %w", len(cert), maxSNPCertBytes, spec.ErrUnsupported)
		}
		o.cert = cert
		return nil
	}
}

// WithReportData sets the report data the evidence must carry (the 48-byte
// digest or the whole 64-byte field). Without it the binding is not checked.
func WithReportData(rd []byte) OfflineOption {
	return func(o *offlineOptions) error {
		if len(rd) == 0 || len(rd) > 64 {
			return fmt.Errorf("report data of %d bytes, want 1 to 64: %w", len(rd), spec.ErrUnsupported)
		}
		o.reportData = rd
		return nil
	}
}

// WithCollateral sets the collateral directory (Config.Collateral).
func WithCollateral(dir string) OfflineOption {
	return func(o *offlineOptions) error { o.cfg.Collateral = dir; return nil }
}

// WithTime judges certificates and collateral at t instead of now.
func WithTime(t time.Time) OfflineOption {
	return func(o *offlineOptions) error {
		if t.IsZero() {
			return fmt.Errorf("zero verification time: %w", spec.ErrUnsupported)
		}
		o.cfg.Now = func() time.Time { return t }
		return nil
	}
}

// WithAllowDebug accepts SNP and TDX guests whose debug bit is set.
func WithAllowDebug() OfflineOption {
	return func(o *offlineOptions) error { o.cfg.AllowDebug = true; return nil }
}

// VerifyFile verifies one piece of evidence outside a broker session (coffer
// kbs verify-evidence) and returns the claims a broker's policy would see.
// raw is, by tee:
//
//   - "snp": trustee's snp evidence JSON, or a raw 1184-byte
//     ATTESTATION_REPORT (then WithCert supplies its VCEK or VLEK unless
//     the collateral directory has the VCEK);
//   - "tdx": trustee's tdx evidence JSON or a raw DCAP quote; collateral
//     comes from WithCollateral (see NewTDX);
//   - "tpm": trustee's tpm evidence JSON, verified by NewTPM.
//
// Nothing is fetched from AMD or Intel. Without WithReportData the report
// data is not compared (Evidence.NoBinding); everything else is checked as
// in the broker. Errors wrap spec.ErrIntegrity or spec.ErrUnsupported.
func VerifyFile(ctx context.Context, tee string, raw []byte, opts ...OfflineOption) (Claims, error) {
	var o offlineOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if len(raw) > MaxEvidenceBytes {
		return nil, fmt.Errorf("%s evidence of %d bytes, at most %d: %w", tee, len(raw), MaxEvidenceBytes, spec.ErrUnsupported)
	}
	t, ok := lookupTEE(protocol.Tee(tee))
	if !ok || t.Offline == nil {
		return nil, fmt.Errorf("tee %q: offline verification knows %s: %w", tee, offlineNames(), spec.ErrUnsupported)
	}
	if o.cert != nil && !t.TakesCert {
		return nil, fmt.Errorf("a certificate applies to snp evidence only, not %s: %w", tee, spec.ErrUnsupported)
	}
	ev := Evidence{Tee: protocol.Tee(tee), Primary: raw, ReportData: o.reportData, NoBinding: o.reportData == nil}
	return t.Offline(ctx, raw, o, ev)
}

func isJSONEvidence(raw []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(raw, " \t\r\n"), []byte("{"))
}

func verifySNPFile(ctx context.Context, raw []byte, o offlineOptions, ev Evidence) (Claims, error) {
	var certs snpCerts
	report := raw
	if isJSONEvidence(raw) {
		var err error
		if report, certs, err = parseSNPEvidence(raw); err != nil {
			return nil, err
		}
	} else if len(raw) != SNPReportSize {
		return nil, fmt.Errorf("snp evidence is neither JSON nor a %d-byte report (%d bytes): %w", SNPReportSize, len(raw), spec.ErrUnsupported)
	}
	if o.cert != nil {
		info, err := abi.ParseSignerInfo(binary.LittleEndian.Uint32(report[0x48:]))
		if err != nil {
			return nil, fmt.Errorf("snp report key_info: %v: %w", err, spec.ErrUnsupported)
		}
		slot := &certs.vcek
		if info.SigningKey == abi.VlekReportSigner {
			slot = &certs.vlek
		}
		if *slot != nil {
			return nil, fmt.Errorf("snp evidence already carries its %v; a certificate given besides conflicts: %w", info.SigningKey, spec.ErrUnsupported)
		}
		*slot = o.cert
	}
	return snpVerifier{o.cfg}.verifyReport(ctx, report, certs, ev)
}

func verifyTDXFile(ctx context.Context, raw []byte, o offlineOptions, ev Evidence) (Claims, error) {
	if isJSONEvidence(raw) {
		return NewTDX(o.cfg).Verify(ctx, ev)
	}
	return tdxVerifier{o.cfg}.verifyQuote(ctx, raw, ev)
}

func verifyTPMFile(ctx context.Context, _ []byte, o offlineOptions, ev Evidence) (Claims, error) {
	return NewTPM(o.cfg).Verify(ctx, ev)
}

// WriteClaims writes claims as "key = value" lines, nested objects flattened with
// dots, the launch measurement first (SNP measurement, TDX quote.body.mr_td),
// the rest sorted.
func WriteClaims(w io.Writer, claims Claims) error {
	flat := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(prefix+k+".", e)
			}
		case string:
			flat[prefix[:len(prefix)-1]] = v
		default:
			b, _ := json.Marshal(v)
			flat[prefix[:len(prefix)-1]] = string(b)
		}
	}
	walk("", map[string]any(claims))
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		switch k {
		case "measurement", "quote.body.mr_td":
			return 0
		}
		return 1
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if _, err := fmt.Fprintf(w, "%s = %s\n", k, flat[k]); err != nil {
			return err
		}
	}
	return nil
}
