package attest

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
	"github.com/google/go-tdx-guest/verify/trust"

	"github.com/coffer-dev/coffer/spec"
)

// Bounds on TDX evidence and collateral.
const (
	// MaxTDXQuoteBytes bounds a TDX quote (a v4 quote with its PCK chain
	// is about 5 KiB).
	MaxTDXQuoteBytes = 64 << 10
	// maxTDXCollateralBytes bounds one collateral file (TCB info, QE
	// identity, CRL, issuer chain).
	maxTDXCollateralBytes = 1 << 20

	tdxHeaderSize = 48
	tdxBodySize   = 584 // TD 1.0 report body of a v4 quote
)

// NewTDX returns the verifier of Intel TDX evidence as Confidential
// Containers' trustee (deps/verifier/src/tdx) defines it and guest-components'
// tdx attester produces it:
//
//	{"cc_eventlog": "<std base64 of the CCEL and AAEL event log>" | null,
//	 "quote": "<std base64 of the DCAP quote>"}
//
// The quote must be a DCAP v4 TDX quote (tee_type 0x81; go-tdx-guest at the
// version coffer uses parses no v5 quotes: they are refused as unsupported)
// of at most MaxTDXQuoteBytes. Checks, cheap ones first:
//
//   - REPORTDATA equals the expected report data zero-padded to 64 bytes
//     (constant time); evidence without expected report data is refused
//     unless Evidence.NoBinding;
//   - with init-data, MRCONFIGID equals its digest padded or truncated to 48
//     bytes, as trustee does;
//   - TD_ATTRIBUTES.DEBUG is refused unless Config.AllowDebug;
//   - go-tdx-guest's verify: the PCK certificate chain (cert data type 5)
//     to Intel's SGX Root CA at Config.Now, the QE report's signature by the
//     PCK key and its binding of the attestation key, the quote's signature;
//     TCB info and QE identity signed by Intel's TCB signing key, not expired
//     at Config.Now, matching the quote (FMSPC, PCE id, TDX module, QE
//     identity) and placing both the TDX TCB and the QE at "UpToDate"
//     (stricter than trustee, which reports OutOfDate and the like in
//     tcb_status); PCK and root CA CRLs when available.
//
// Collateral is required: a TDX quote's TCB and QE cannot be appraised
// without it. It is read from Config.Collateral, files named after Intel
// PCS's answers:
//
//	<dir>/tdx/tcbinfo-<fmspc>.json              body of GET /tdx/certification/v4/tcb?fmspc=<fmspc> (fmspc in lowercase hex)
//	<dir>/tdx/tcbinfo-<fmspc>.issuer-chain.pem  its TCB-Info-Issuer-Chain header, URL-decoded (PEM: signing cert, root)
//	<dir>/tdx/qe-identity.json                  body of GET /tdx/certification/v4/qe/identity
//	<dir>/tdx/qe-identity.issuer-chain.pem      its SGX-Enclave-Identity-Issuer-Chain header, URL-decoded
//	<dir>/tdx/pckcrl-<platform|processor>.der   optional: GET /sgx/certification/v4/pckcrl?ca=<ca>&encoding=der
//	<dir>/tdx/pckcrl-<ca>.issuer-chain.pem      its SGX-PCK-CRL-Issuer-Chain header, URL-decoded
//	<dir>/tdx/rootca.crl                        optional: https://certificates.trustedservices.intel.com/IntelSGXRootCA.der
//
// What the directory lacks is fetched from Intel PCS only with
// Config.FetchCollateral. Revocation is checked when both CRLs are in the
// directory or fetching is allowed. The event log (cc_eventlog) is checked
// to be base64 but is neither replayed against the RTMRs nor turned into
// claims (trustee's uefi_event_logs): not implemented yet.
//
// The claims use trustee's names: "quote" {"header": {version, att_key_type,
// tee_type, reserved, vendor_id, user_data}, "body": {tcb_svn, mr_seam,
// mrsigner_seam, seam_attributes, td_attributes, xfam, mr_td, mr_config_id,
// mr_owner, mr_owner_config, rtmr_0, rtmr_1, rtmr_2, rtmr_3, report_data}}
// (lowercase hex of the raw fields), "td_attributes" {debug, septve_disable,
// protection_keys, key_locker, perfmon} (booleans), "report_data" and
// "init_data" (hex of REPORTDATA and MRCONFIGID), "platform_instance_id"
// (hex, when the PCK certificate has one), and from the collateral
// "tcb_status", "tcb_date" and "advisory_ids" of the matched TDX TCB level.
func NewTDX(cfg Config) Verifier {
	cfg.cache = newCheckCache(cfg.CacheBytes) // collateral files read (tdx_cache.go)
	return tdxVerifier{cfg}
}

type tdxVerifier struct{ cfg Config }

// Verify implements Verifier.
func (v tdxVerifier) Verify(ctx context.Context, ev Evidence) (Claims, error) {
	if len(ev.Primary) > MaxEvidenceBytes {
		return nil, fmt.Errorf("tdx evidence of %d bytes, at most %d: %w", len(ev.Primary), MaxEvidenceBytes, spec.ErrUnsupported)
	}
	var te struct {
		CCEventlog *string `json:"cc_eventlog"`
		Quote      string  `json:"quote"`
	}
	if err := json.Unmarshal(ev.Primary, &te); err != nil {
		return nil, fmt.Errorf("tdx evidence: %v: %w", err, spec.ErrUnsupported)
	}
	if te.Quote == "" {
		return nil, fmt.Errorf("tdx evidence has no quote: %w", spec.ErrUnsupported)
	}
	if n := base64.StdEncoding.DecodedLen(len(te.Quote)); n > MaxTDXQuoteBytes+2 {
		return nil, fmt.Errorf("tdx quote of about %d bytes, at most %d: %w", n, MaxTDXQuoteBytes, spec.ErrUnsupported)
	}
	quote, err := base64.StdEncoding.DecodeString(te.Quote)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence quote: not standard base64: %w", spec.ErrUnsupported)
	}
	if te.CCEventlog != nil {
		if _, err := base64.StdEncoding.DecodeString(*te.CCEventlog); err != nil {
			return nil, fmt.Errorf("tdx evidence cc_eventlog: not standard base64: %w", spec.ErrUnsupported)
		}
	}
	return v.verifyQuote(ctx, quote, ev)
}

// verifyQuote checks a raw DCAP quote and returns its claims.
func (v tdxVerifier) verifyQuote(ctx context.Context, raw []byte, ev Evidence) (Claims, error) {
	if len(raw) > MaxTDXQuoteBytes {
		return nil, fmt.Errorf("tdx quote of %d bytes, at most %d: %w", len(raw), MaxTDXQuoteBytes, spec.ErrUnsupported)
	}
	if len(raw) < tdxHeaderSize+tdxBodySize {
		return nil, fmt.Errorf("tdx quote of %d bytes is too short: %w", len(raw), spec.ErrUnsupported)
	}
	switch version := binary.LittleEndian.Uint16(raw); version {
	case 4:
	case 5:
		return nil, fmt.Errorf("tdx quote version 5: not supported yet (go-tdx-guest at coffer's version parses version 4): %w", spec.ErrUnsupported)
	case 3:
		return nil, fmt.Errorf("quote version 3 is an SGX quote, not a TDX quote: %w", spec.ErrUnsupported)
	default:
		return nil, fmt.Errorf("tdx quote version %d, want 4: %w", version, spec.ErrUnsupported)
	}
	if tee := binary.LittleEndian.Uint32(raw[4:]); tee != abi.TeeTDX {
		return nil, fmt.Errorf("quote tee_type 0x%x, want 0x81 (TDX): %w", tee, spec.ErrUnsupported)
	}
	parsed, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("tdx quote: %v: %w", err, spec.ErrUnsupported)
	}
	quote, ok := parsed.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("tdx quote: unexpected form %T: %w", parsed, spec.ErrUnsupported)
	}
	body := quote.GetTdQuoteBody()

	// Cheap checks first: binding, init-data, debug.
	if err := bindReportData("tdx REPORTDATA", body.GetReportData(), ev); err != nil {
		return nil, err
	}
	if err := bindInitData("tdx MRCONFIGID", body.GetMrConfigId(), ev); err != nil {
		return nil, err
	}
	attrs := binary.LittleEndian.Uint64(body.GetTdAttributes())
	if attrs&1 != 0 && !v.cfg.AllowDebug {
		return nil, fmt.Errorf("tdx TD_ATTRIBUTES.DEBUG is set (the host can read and change TD memory); refused unless debug guests are allowed: %w", spec.ErrIntegrity)
	}

	chain, err := verify.ExtractChainFromQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("tdx quote PCK certificate chain: %v: %w", err, spec.ErrIntegrity)
	}
	exts, err := pcs.PckCertificateExtensions(chain.PCKCertificate)
	if err != nil {
		return nil, fmt.Errorf("tdx PCK certificate: %v: %w", err, spec.ErrIntegrity)
	}
	ca := "platform"
	if chain.PCKCertificate.Issuer.CommonName == "Intel SGX PCK Processor CA" {
		ca = "processor"
	}
	getter, checkCRL, err := v.collateral(strings.ToLower(exts.FMSPC), ca)
	if err != nil {
		return nil, err
	}
	now := v.cfg.now()
	opts := &verify.Options{
		GetCollateral:    true,
		CheckRevocations: checkCRL,
		Getter:           getter,
		Now:              &verify.TimeSet{PckCertChain: now, TcbInfo: now, QeIdentity: now, PckCrl: now, RootCaCrl: now},
		TrustedRoots:     intelSGXRoots(),
	}
	if err := verify.TdxQuoteContext(ctx, quote, opts); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("tdx quote does not verify at %s: %v: %w", now.UTC().Format(time.RFC3339), err, spec.ErrIntegrity)
	}
	level, _, err := verify.SupportedTcbLevelsFromCollateral(quote, opts)
	if err != nil {
		return nil, fmt.Errorf("tdx TCB level: %v: %w", err, spec.ErrIntegrity)
	}
	claims := tdxClaims(raw, attrs)
	if id := platformInstanceID(chain.PCKCertificate); id != nil {
		claims["platform_instance_id"] = hex.EncodeToString(id)
	}
	advisories := level.AdvisoryIDs
	if advisories == nil {
		advisories = []string{}
	}
	claims["tcb_status"] = string(level.TcbStatus)
	claims["tcb_date"] = level.TcbDate
	claims["advisory_ids"] = advisories
	return claims, nil
}

// tdxClaims are trustee's quote claims (generate_parsed_claim) of a v4
// quote, without the event log and DCAP supplemental claims.
func tdxClaims(raw []byte, attrs uint64) Claims {
	h := raw[:tdxHeaderSize]
	b := raw[tdxHeaderSize : tdxHeaderSize+tdxBodySize]
	x := hex.EncodeToString
	header := map[string]any{
		"version": x(h[0:2]), "att_key_type": x(h[2:4]), "tee_type": x(h[4:8]),
		"reserved": x(h[8:12]), "vendor_id": x(h[12:28]), "user_data": x(h[28:48]),
	}
	fields := []struct {
		name   string
		lo, hi int
	}{
		{"tcb_svn", 0, 16}, {"mr_seam", 16, 64}, {"mrsigner_seam", 64, 112}, {"seam_attributes", 112, 120},
		{"td_attributes", 120, 128}, {"xfam", 128, 136}, {"mr_td", 136, 184}, {"mr_config_id", 184, 232},
		{"mr_owner", 232, 280}, {"mr_owner_config", 280, 328}, {"rtmr_0", 328, 376}, {"rtmr_1", 376, 424},
		{"rtmr_2", 424, 472}, {"rtmr_3", 472, 520}, {"report_data", 520, 584},
	}
	body := map[string]any{}
	for _, f := range fields {
		body[f.name] = x(b[f.lo:f.hi])
	}
	return Claims{
		"quote": map[string]any{"header": header, "body": body},
		"td_attributes": map[string]any{
			"debug":           attrs&(1<<0) != 0,
			"septve_disable":  attrs&(1<<28) != 0,
			"protection_keys": attrs&(1<<30) != 0,
			"key_locker":      attrs&(1<<31) != 0,
			"perfmon":         attrs&(1<<63) != 0,
		},
		"report_data": body["report_data"],
		"init_data":   body["mr_config_id"],
	}
}

// oidPlatformInstanceID is the PCK certificate's PlatformInstanceID (SGX
// extension 1.2.840.113741.1.13.1.6; platform CA certificates only). The
// claim carries its bytes reversed, as trustee emits it.
var oidPlatformInstanceID = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 6}

func platformInstanceID(pck *x509.Certificate) []byte {
	var sgx []struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue
	}
	if rest, err := asn1.Unmarshal(certExtension(pck, pcs.OidSgxExtension), &sgx); err != nil || len(rest) != 0 {
		return nil
	}
	for _, e := range sgx {
		var id []byte
		if e.ID.Equal(oidPlatformInstanceID) {
			if rest, err := asn1.Unmarshal(e.Value.FullBytes, &id); err == nil && len(rest) == 0 && len(id) == 16 {
				slices.Reverse(id) // trustee reads the little-endian GUID as a big-endian number
				return id
			}
		}
	}
	return nil
}

// intelSGXRootCA is Intel's SGX Root CA, the trust anchor of PCK
// certificates and TCB signing certificates (the certificate go-tdx-guest
// embeds as verify/trusted_root.pem; coffer passes it explicitly so that
// go-tdx-guest does not log a warning to stdout about using its default).
const intelSGXRootCA = `-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
`

func parseIntelSGXRoots() *x509.CertPool {
	block, _ := pem.Decode([]byte(intelSGXRootCA))
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic("attest: embedded Intel SGX Root CA: " + err.Error())
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool
}

// intelRootCRLURL is the CRL distribution point of Intel's SGX Root CA.
const intelRootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

// collateral returns the getter go-tdx-guest fetches collateral with:
// files of Config.Collateral, then (Config.FetchCollateral) Intel PCS;
// and whether revocation can be checked (ca: the PCK CA, "platform" or
// "processor"). Without TCB info and QE identity
// for this FMSPC, and no fetching, the quote is refused.
func (v tdxVerifier) collateral(fmspc, ca string) (trust.HTTPSGetter, bool, error) {
	g := tdxCollateralGetter{cache: v.cfg.cache}
	if v.cfg.Collateral != "" {
		g.dir = filepath.Join(v.cfg.Collateral, "tdx")
	}
	if v.cfg.FetchCollateral {
		g.net = trust.DefaultHTTPSGetter()
		return g, true, nil
	}
	need := []string{"tcbinfo-" + fmspc + ".json", "qe-identity.json"}
	for _, name := range need {
		if g.dir == "" || !fileExists(filepath.Join(g.dir, name)) {
			where := "no collateral directory is set"
			if g.dir != "" {
				where = "not in " + g.dir
			}
			return nil, false, fmt.Errorf("tdx quote needs Intel's TCB info and QE identity to be appraised (%s: %s), and fetching from Intel PCS is not enabled: %w",
				strings.Join(need, ", "), where, spec.ErrIntegrity)
		}
	}
	crl := fileExists(filepath.Join(g.dir, "pckcrl-"+ca+".der")) && fileExists(filepath.Join(g.dir, "rootca.crl"))
	return g, crl, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tdxCollateralGetter answers go-tdx-guest's Intel PCS requests from files
// (see NewTDX), and from the network only when net is set.
type tdxCollateralGetter struct {
	dir   string
	net   trust.HTTPSGetter
	cache *checkCache // files read, by path, size and modification time
}

// Get implements trust.HTTPSGetter.
func (g tdxCollateralGetter) Get(url string) (map[string][]string, []byte, error) {
	return g.GetContext(context.Background(), url)
}

// GetContext implements trust.ContextHTTPSGetter.
func (g tdxCollateralGetter) GetContext(ctx context.Context, url string) (map[string][]string, []byte, error) {
	if body, chain, header := tdxCollateralFiles(url); g.dir != "" && body != "" {
		b, err := g.read(filepath.Join(g.dir, body))
		if err == nil {
			if chain == "" {
				return nil, b, nil
			}
			c, err := g.read(filepath.Join(g.dir, chain))
			if err != nil {
				return nil, nil, err
			}
			return map[string][]string{header: {neturl.QueryEscape(string(c))}}, b, nil
		}
		if !errors.Is(err, os.ErrNotExist) || g.net == nil {
			return nil, nil, err
		}
	}
	if g.net == nil {
		return nil, nil, fmt.Errorf("%s: not in the collateral directory, and fetching from Intel PCS is not enabled", url)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return trust.GetWith(ctx, g.net, url)
}

// tdxCollateralFiles maps an Intel PCS URL to its files in the collateral
// directory: the body, the issuer chain, and the header that carries it.
func tdxCollateralFiles(url string) (body, chain, header string) {
	if fmspc, ok := strings.CutPrefix(url, pcs.TdxBaseURL+"/tcb?fmspc="); ok {
		if b, err := hex.DecodeString(fmspc); err == nil && len(b) == 6 {
			f := "tcbinfo-" + strings.ToLower(fmspc)
			return f + ".json", f + ".issuer-chain.pem", pcs.TcbInfoIssuerChainPhrase
		}
		return "", "", ""
	}
	switch url {
	case pcs.QeIdentityURL():
		return "qe-identity.json", "qe-identity.issuer-chain.pem", pcs.SgxQeIdentityIssuerChainPhrase
	case pcs.PckCrlURL("platform"):
		return "pckcrl-platform.der", "pckcrl-platform.issuer-chain.pem", pcs.SgxPckCrlIssuerChainPhrase
	case pcs.PckCrlURL("processor"):
		return "pckcrl-processor.der", "pckcrl-processor.issuer-chain.pem", pcs.SgxPckCrlIssuerChainPhrase
	case intelRootCRLURL:
		return "rootca.crl", "", ""
	}
	return "", "", ""
}
