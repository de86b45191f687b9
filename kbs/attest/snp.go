package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Bounds on hardware evidence, checked before anything is parsed.
const (
	// MaxEvidenceBytes bounds tee-evidence.primary_evidence for snp and tdx.
	MaxEvidenceBytes = 256 << 10
	// SNPReportSize is the size of an SEV-SNP ATTESTATION_REPORT.
	SNPReportSize = protocol.SNPReportSize
	// maxSNPCerts bounds the entries of an SNP evidence's cert_chain (the
	// firmware's table holds ARK, ASK, VCEK or VLEK and a CRL or two).
	maxSNPCerts = 16
	// maxSNPCertBytes bounds one certificate (AMD's are under 2 KiB).
	maxSNPCertBytes = 16 << 10
)

// NewSNP returns the verifier of AMD SEV-SNP evidence as Confidential
// Containers' trustee (deps/verifier/src/snp) defines it and guest-components'
// snp attester produces it:
//
//	{"attestation_report": {<the sev crate's serde form of ATTESTATION_REPORT:
//	    "version", "guest_svn", "policy", "family_id": [16 numbers], …,
//	    "signature": {"r": [72 numbers], "s": [72 numbers]}}},
//	 "cert_chain": [{"cert_type": "VCEK"|"VLEK"|"ASK"|"ARK"|"CRL"|{"OTHER": "<guid>"},
//	                 "data": [DER bytes as numbers]}, …] | null}
//
// The report is re-encoded into its 1184 firmware bytes exactly as the sev
// crate does (reserved fields zero; the TCB layout of the processor
// generation) and then checked, cheap checks first:
//
//   - REPORT_DATA equals the expected report data zero-padded to 64 bytes
//     (constant time); evidence without expected report data is refused
//     unless Evidence.NoBinding;
//   - with init-data, HOST_DATA equals its digest (InitDataDigest) padded or
//     truncated to 32 bytes, as trustee does;
//   - the guest policy's DEBUG bit (19) is refused unless Config.AllowDebug;
//   - VMPL is 0 (trustee refuses reports from other VMPLs);
//   - the VCEK or VLEK (as KEY_INFO names the signer) chains to AMD's ARK of
//     the report's processor generation (Milan, Genoa, Turin; the ARKs,
//     ASKs and ASVKs embedded in go-sev-guest) at Config.Now, through the
//     ASK (VCEK) or ASVK (VLEK). An ARK in the evidence must carry the
//     embedded ARK's key; an ASK in the evidence is used only if the ARK
//     signed it;
//   - the report's signature verifies with that key;
//   - the reported TCB (boot loader, TEE, SNP, microcode, and FMC on Turin)
//     equals the TCB in the VCEK/VLEK's extensions, and a VCEK's HWID equals
//     CHIP_ID unless the chip id is masked.
//
// The VCEK comes from the evidence's cert_chain; failing that from
// Config.Collateral laid out like trustee's KDS offline store:
// <dir>/snp/vcek/<hwid>/<tcb>_vcek.der, then <dir>/snp/vcek/<hwid>/vcek.der
// (hwid = CHIP_ID in hex, its first 8 bytes on Turin; tcb =
// bl%02d_tee%02d_snp%02d_ucode%02d[_fmc%02d], DER or PEM); failing that,
// only with Config.FetchCollateral, from AMD's KDS. A VLEK must travel in the
// evidence. AMD CRLs are not consulted (trustee does not either).
//
// Report versions 2 to 5 are accepted (trustee requires at least 3; for
// version 2 the processor generation is read from the VCEK/VLEK's product
// name). Failures wrap spec.ErrIntegrity (binding, debug, VMPL, chain,
// signature, TCB) or spec.ErrUnsupported (malformed evidence).
//
// The claims are trustee's, with the same names and types:
// policy_abi_major, policy_abi_minor (numbers), policy_smt_allowed,
// policy_migrate_ma, policy_debug_allowed, policy_single_socket (booleans),
// reported_tcb_bootloader, reported_tcb_tee, reported_tcb_snp,
// reported_tcb_microcode (numbers), platform_tsme_enabled,
// platform_smt_enabled (booleans), and in lowercase hex measurement (48
// bytes), report_data (64), init_data (HOST_DATA, 32) and chip_id (64).
func NewSNP(cfg Config) Verifier {
	cfg.cache = newCheckCache(cfg.CacheBytes) // chains verified, certificates parsed (snp_cache.go)
	return snpVerifier{cfg}
}

type snpVerifier struct{ cfg Config }

// Verify implements Verifier.
func (v snpVerifier) Verify(ctx context.Context, ev Evidence) (Claims, error) {
	raw, certs, err := parseSNPEvidence(ev.Primary)
	if err != nil {
		return nil, err
	}
	return v.verifyReport(ctx, raw, certs, ev)
}

// snpCerts are the certificates an SNP evidence carries (DER, nil when absent).
type snpCerts struct{ vcek, vlek, ask, ark []byte }

// parseSNPEvidence bounds and decodes trustee's SNP evidence into the
// report's firmware bytes and its certificates.
func parseSNPEvidence(primary json.RawMessage) ([]byte, snpCerts, error) {
	var certs snpCerts
	if len(primary) > MaxEvidenceBytes {
		return nil, certs, fmt.Errorf("snp evidence of %d bytes, at most %d: %w", len(primary), MaxEvidenceBytes, spec.ErrUnsupported)
	}
	var se struct {
		Report    *protocol.SNPReportJSON `json:"attestation_report"`
		CertChain []protocol.SNPCertEntry `json:"cert_chain"`
	}
	if err := json.Unmarshal(primary, &se); err != nil {
		return nil, certs, fmt.Errorf("snp evidence: %v: %w", err, spec.ErrUnsupported)
	}
	if se.Report == nil {
		return nil, certs, fmt.Errorf("snp evidence has no attestation_report: %w", spec.ErrUnsupported)
	}
	if len(se.CertChain) > maxSNPCerts {
		return nil, certs, fmt.Errorf("snp evidence cert_chain has %d entries, at most %d: %w", len(se.CertChain), maxSNPCerts, spec.ErrUnsupported)
	}
	for _, c := range se.CertChain {
		if len(c.Data) > maxSNPCertBytes {
			return nil, certs, fmt.Errorf("snp evidence %s certificate of %d bytes, at most %d: %w", c.CertType, len(c.Data), maxSNPCertBytes, spec.ErrUnsupported)
		}
		// The first of each kind counts, as in trustee.
		slot := map[string]*[]byte{"VCEK": &certs.vcek, "VLEK": &certs.vlek, "ASK": &certs.ask, "ARK": &certs.ark}[c.CertType.Name]
		if slot != nil && *slot == nil {
			*slot = c.Data
		}
	}
	raw, err := se.Report.Bytes()
	if err != nil {
		return nil, certs, fmt.Errorf("snp evidence attestation_report: %v: %w", err, spec.ErrUnsupported)
	}
	return raw, certs, nil
}

// verifyReport checks a report's firmware bytes and returns its claims.
func (v snpVerifier) verifyReport(ctx context.Context, raw []byte, certs snpCerts, ev Evidence) (Claims, error) {
	if len(raw) != SNPReportSize {
		return nil, fmt.Errorf("snp report of %d bytes, want %d: %w", len(raw), SNPReportSize, spec.ErrUnsupported)
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("snp report: %v: %w", err, spec.ErrUnsupported)
	}
	if report.Version < abi.ReportVersion2 || report.Version > abi.ReportVersion5 {
		return nil, fmt.Errorf("snp report version %d, want 2 to 5: %w", report.Version, spec.ErrUnsupported)
	}
	if report.SignatureAlgo != abi.SignEcdsaP384Sha384 {
		return nil, fmt.Errorf("snp report signature algorithm %d, want 1 (ECDSA P-384 with SHA-384): %w", report.SignatureAlgo, spec.ErrUnsupported)
	}

	// Cheap checks first: binding, init-data, policy, VMPL.
	if err := bindReportData("snp REPORT_DATA", report.ReportData, ev); err != nil {
		return nil, err
	}
	if err := bindInitData("snp HOST_DATA", report.HostData, ev); err != nil {
		return nil, err
	}
	policy, err := abi.ParseSnpPolicy(report.Policy)
	if err != nil {
		return nil, fmt.Errorf("snp report policy: %v: %w", err, spec.ErrUnsupported)
	}
	if policy.Debug && !v.cfg.AllowDebug {
		return nil, fmt.Errorf("snp guest policy allows debugging (bit 19: the host can read and change guest memory); refused unless debug guests are allowed: %w", spec.ErrIntegrity)
	}
	if report.Vmpl != 0 {
		return nil, fmt.Errorf("snp report requested at VMPL %d, want 0: %w", report.Vmpl, spec.ErrIntegrity)
	}
	info, err := abi.ParseSignerInfo(report.SignerInfo)
	if err != nil {
		return nil, fmt.Errorf("snp report key_info: %v: %w", err, spec.ErrUnsupported)
	}
	signer := info.SigningKey
	if signer != abi.VcekReportSigner && signer != abi.VlekReportSigner {
		return nil, fmt.Errorf("snp report is not signed by a VCEK or VLEK (signing key %v): %w", signer, spec.ErrIntegrity)
	}
	gen := ""
	if report.Version >= abi.ReportVersion3 {
		if gen, err = snpGeneration(raw[0x188], raw[0x189]); err != nil {
			return nil, err
		}
	}

	// The endorsement key and its chain.
	vek, err := v.endorsementKey(ctx, certs, signer, gen, raw)
	if err != nil {
		return nil, err
	}
	if gen == "" { // version 2: the certificate names the product
		if gen, err = kdsProductLine(vek); err != nil {
			return nil, err
		}
		if gen == "Turin" {
			return nil, fmt.Errorf("snp report version 2 from a Turin processor: %w", spec.ErrUnsupported)
		}
	}
	if err := v.checkSNPChain(vek, certs, signer, gen, v.cfg.now()); err != nil {
		return nil, err
	}
	if err := verify.SnpReportSignature(raw, vek); err != nil {
		return nil, fmt.Errorf("snp report signature does not verify with the %v: %v: %w", signer, err, spec.ErrIntegrity)
	}
	if err := checkSNPTCB(raw, report, vek, signer, gen); err != nil {
		return nil, err
	}
	return snpClaims(raw, report, policy, gen), nil
}

// snpGeneration maps CPUID family and model to a processor generation.
func snpGeneration(family, model byte) (string, error) { return protocol.SNPGeneration(family, model) }

// KDS certificate extensions (AMD's VCEK/VLEK specification).
var (
	oidKDSProductName = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 2}
	oidKDSBlSPL       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 1}
	oidKDSTeeSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 2}
	oidKDSSnpSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 3}
	oidKDSUcodeSPL    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 8}
	oidKDSFmcSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}
	oidKDSHWID        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 4}
)

func certExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) []byte {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Value
		}
	}
	return nil
}

// kdsProductLine reads the product line ("Milan" of "Milan-B0") from a
// VCEK/VLEK's product-name extension.
func kdsProductLine(c *x509.Certificate) (string, error) {
	var name string
	if rest, err := asn1.UnmarshalWithParams(certExtension(c, oidKDSProductName), &name, "ia5"); err != nil || len(rest) != 0 {
		return "", fmt.Errorf("snp %s certificate has no product name: %w", c.Subject.CommonName, spec.ErrIntegrity)
	}
	line, _, _ := strings.Cut(name, "-")
	switch line {
	case "Milan", "Genoa", "Turin":
		return line, nil
	}
	return "", fmt.Errorf("snp %s certificate names product %q: %w", c.Subject.CommonName, name, spec.ErrUnsupported)
}

// kdsSPL reads one security patch level (an ASN.1 INTEGER) from a
// VCEK/VLEK extension.
func kdsSPL(c *x509.Certificate, oid asn1.ObjectIdentifier, name string) (byte, error) {
	var n int64
	if rest, err := asn1.Unmarshal(certExtension(c, oid), &n); err != nil || len(rest) != 0 || n < 0 || n > 255 {
		return 0, fmt.Errorf("snp %s certificate has no valid %s security patch level: %w", c.Subject.CommonName, name, spec.ErrIntegrity)
	}
	return byte(n), nil
}

// kdsHWID reads a VCEK's hardware id: the raw 64 bytes (older KDS
// certificates) or a DER OCTET STRING.
func kdsHWID(c *x509.Certificate) []byte {
	v := certExtension(c, oidKDSHWID)
	if len(v) == abi.ChipIDSize {
		return v
	}
	var octets []byte
	if rest, err := asn1.Unmarshal(v, &octets); err != nil || len(rest) != 0 {
		return nil
	}
	return octets
}

// snpTCB is a TCB_VERSION decoded for one processor generation.
type snpTCB = protocol.SNPTCB

func decodeSNPTCB(b []byte, gen string) snpTCB { return protocol.DecodeSNPTCB(b, gen) }

// snpHWID is the hardware id trustee's KDS paths use: CHIP_ID, its first 8
// bytes on Turin.
func snpHWID(raw []byte, gen string) string {
	chip := raw[0x1A0:0x1E0]
	if gen == "Turin" {
		chip = chip[:8]
	}
	return hex.EncodeToString(chip)
}

// tcbPrefix is the TCB part of a KDS VCEK path.
func tcbPrefix(t snpTCB, gen string) string {
	s := fmt.Sprintf("bl%02d_tee%02d_snp%02d_ucode%02d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
	if gen == "Turin" {
		s += fmt.Sprintf("_fmc%02d", t.FMC)
	}
	return s
}

// endorsementKey returns the VCEK or VLEK that signed the report: from the
// evidence, the collateral directory, or (VCEK, FetchCollateral) AMD's KDS.
func (v snpVerifier) endorsementKey(ctx context.Context, certs snpCerts, signer abi.ReportSigner, gen string, raw []byte) (*x509.Certificate, error) {
	der := certs.vcek
	if signer == abi.VlekReportSigner {
		der = certs.vlek
	}
	var looked []string
	if der == nil && signer == abi.VcekReportSigner && gen != "" && !allZero(raw[0x1A0:0x1E0]) {
		tcb := decodeSNPTCB(raw[0x180:0x188], gen)
		if v.cfg.Collateral != "" {
			dir := filepath.Join(v.cfg.Collateral, "snp", "vcek", snpHWID(raw, gen))
			for _, name := range []string{tcbPrefix(tcb, gen) + "_vcek.der", "vcek.der"} {
				p := filepath.Join(dir, name)
				b, err := ReadBounded(p, maxSNPCertBytes)
				if err == nil {
					der = b
					break
				}
				if !errors.Is(err, os.ErrNotExist) {
					return nil, fmt.Errorf("snp collateral: %w", err)
				}
				looked = append(looked, p)
			}
		}
		if der == nil && v.cfg.FetchCollateral {
			b, err := fetchVCEK(ctx, raw, gen, tcb)
			if err != nil {
				return nil, err
			}
			der = b
		}
	}
	if der == nil {
		where := "the evidence carries none"
		if len(looked) > 0 {
			where += "; not in " + strings.Join(looked, " or ")
		}
		if signer == abi.VcekReportSigner && !v.cfg.FetchCollateral {
			where += "; fetching from AMD KDS is not enabled"
		}
		return nil, fmt.Errorf("snp report is signed by a %v but %s: %w", signer, where, spec.ErrIntegrity)
	}
	c, err := v.cfg.cache.parseCert(der, trust.ParseCert)
	if err != nil {
		return nil, fmt.Errorf("snp %v certificate does not parse: %v: %w", signer, err, spec.ErrIntegrity)
	}
	return c, nil
}

// fetchVCEK asks AMD's KDS for the VCEK of this chip and reported TCB
// (only with Config.FetchCollateral), with go-sev-guest's retrying getter.
func fetchVCEK(ctx context.Context, raw []byte, gen string, tcb snpTCB) ([]byte, error) {
	q := fmt.Sprintf("blSPL=%02d&teeSPL=%02d&snpSPL=%02d&ucodeSPL=%02d", tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode)
	if gen == "Turin" {
		q = fmt.Sprintf("fmcSPL=%02d&", tcb.FMC) + q
	}
	url := fmt.Sprintf("https://kdsintf.amd.com/vcek/v1/%s/%s?%s", gen, snpHWID(raw, gen), q)
	b, err := trust.GetWith(ctx, trust.DefaultHTTPSGetter(), url)
	if err != nil {
		return nil, fmt.Errorf("snp: fetching the VCEK from %s: %v: %w", url, err, spec.ErrIntegrity)
	}
	if len(b) > maxSNPCertBytes {
		return nil, fmt.Errorf("snp: AMD KDS answered %d bytes for a VCEK: %w", len(b), spec.ErrIntegrity)
	}
	return b, nil
}

// parseSNPRoots parses AMD's ARK and the ASK (VCEK) or ASVK (VLEK) of a
// processor generation, as embedded in go-sev-guest.
func parseSNPRoots(gen string, signer abi.ReportSigner) (ark, ica *x509.Certificate, err error) {
	bundles := map[string][2][]byte{
		"Milan": {trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes},
		"Genoa": {trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes},
		"Turin": {trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes},
	}
	b, ok := bundles[gen]
	if !ok {
		return nil, nil, fmt.Errorf("snp: no AMD roots for %q: %w", gen, spec.ErrUnsupported)
	}
	bundle := b[0]
	if signer == abi.VlekReportSigner {
		bundle = b[1]
	}
	icaDER, arkDER, err := kds.ParseProductCertChain(bundle)
	if err == nil {
		if ica, err = x509.ParseCertificate(icaDER); err == nil {
			ark, err = x509.ParseCertificate(arkDER)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("snp: embedded AMD %s roots: %v", gen, err)
	}
	return ark, ica, nil
}

// verifySNPChain checks that vek chains to AMD's ARK of gen at now.
func verifySNPChain(vek *x509.Certificate, certs snpCerts, signer abi.ReportSigner, gen string, now time.Time) error {
	_, err := verifySNPChainPath(vek, certs, signer, gen, now)
	return err
}

// verifySNPChainPath is verifySNPChain returning the chain that verified
// (vek first, the ARK last).
func verifySNPChainPath(vek *x509.Certificate, certs snpCerts, signer abi.ReportSigner, gen string, now time.Time) ([]*x509.Certificate, error) {
	fail := func(err error) ([]*x509.Certificate, error) { return nil, err }
	ark, ica, err := snpRoots(gen, signer)
	if err != nil {
		return fail(err)
	}
	wantCN, wantIssuer := "SEV-VCEK", "SEV-"+gen
	if signer == abi.VlekReportSigner {
		wantCN, wantIssuer = "SEV-VLEK", "SEV-VLEK-"+gen
	}
	if vek.Subject.CommonName != wantCN || vek.Issuer.CommonName != wantIssuer {
		return fail(fmt.Errorf("snp endorsement certificate is %q issued by %q, want %q issued by %q: %w",
			vek.Subject.CommonName, vek.Issuer.CommonName, wantCN, wantIssuer, spec.ErrIntegrity))
	}
	if pub, ok := vek.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P384() {
		return fail(fmt.Errorf("snp %s certificate key is not ECDSA P-384: %w", wantCN, spec.ErrIntegrity))
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(ica)
	if certs.ark != nil {
		given, err := x509.ParseCertificate(certs.ark)
		if err != nil {
			return fail(fmt.Errorf("snp evidence ARK does not parse: %v: %w", err, spec.ErrIntegrity))
		}
		if !bytes.Equal(given.RawSubjectPublicKeyInfo, ark.RawSubjectPublicKeyInfo) {
			return fail(fmt.Errorf("snp evidence ARK is not AMD's %s ARK: %w", gen, spec.ErrIntegrity))
		}
	}
	if certs.ask != nil {
		given, err := x509.ParseCertificate(certs.ask)
		if err != nil {
			return fail(fmt.Errorf("snp evidence ASK does not parse: %v: %w", err, spec.ErrIntegrity))
		}
		intermediates.AddCert(given) // used only if the ARK signed it
	}
	roots := x509.NewCertPool()
	roots.AddCert(ark)
	opts := x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	chains, err := vek.Verify(opts)
	if err != nil {
		return fail(fmt.Errorf("snp %s certificate does not chain to AMD's %s ARK at %s: %v: %w", wantCN, gen, now.UTC().Format(time.RFC3339), err, spec.ErrIntegrity))
	}
	return chains[0], nil
}

// checkSNPTCB compares the reported TCB with the endorsement key's, and a
// VCEK's hardware id with CHIP_ID.
func checkSNPTCB(raw []byte, report *spb.Report, vek *x509.Certificate, signer abi.ReportSigner, gen string) error {
	got := decodeSNPTCB(raw[0x180:0x188], gen)
	var want snpTCB
	var err error
	parts := []struct {
		oid  asn1.ObjectIdentifier
		name string
		dst  *byte
	}{
		{oidKDSBlSPL, "boot loader", &want.Bootloader},
		{oidKDSTeeSPL, "TEE", &want.TEE},
		{oidKDSSnpSPL, "SNP", &want.SNP},
		{oidKDSUcodeSPL, "microcode", &want.Microcode},
	}
	if gen == "Turin" {
		parts = append(parts, struct {
			oid  asn1.ObjectIdentifier
			name string
			dst  *byte
		}{oidKDSFmcSPL, "FMC", &want.FMC})
	}
	for _, p := range parts {
		if *p.dst, err = kdsSPL(vek, p.oid, p.name); err != nil {
			return err
		}
	}
	if got != want {
		return fmt.Errorf("snp reported TCB %s does not match the %v's %s: %w", tcbPrefix(got, gen), signer, tcbPrefix(want, gen), spec.ErrIntegrity)
	}
	if signer == abi.VcekReportSigner && !allZero(report.ChipId) {
		hwid := kdsHWID(vek)
		chip := report.ChipId
		if len(hwid) == 8 {
			chip = chip[:8]
		}
		if len(hwid) == 0 || subtle.ConstantTimeCompare(hwid, chip) != 1 {
			return fmt.Errorf("snp report CHIP_ID is not the VCEK's hardware id: %w", spec.ErrIntegrity)
		}
	}
	return nil
}

// snpClaims are trustee's SNP claims (parse_tee_evidence).
func snpClaims(raw []byte, report *spb.Report, policy abi.SnpPolicy, gen string) Claims {
	tcb := decodeSNPTCB(raw[0x180:0x188], gen)
	return Claims{
		"policy_abi_major":        int(policy.ABIMajor),
		"policy_abi_minor":        int(policy.ABIMinor),
		"policy_smt_allowed":      policy.SMT,
		"policy_migrate_ma":       policy.MigrateMA,
		"policy_debug_allowed":    policy.Debug,
		"policy_single_socket":    policy.SingleSocket,
		"reported_tcb_bootloader": int(tcb.Bootloader),
		"reported_tcb_tee":        int(tcb.TEE),
		"reported_tcb_snp":        int(tcb.SNP),
		"reported_tcb_microcode":  int(tcb.Microcode),
		"platform_tsme_enabled":   report.PlatformInfo&(1<<1) != 0,
		"platform_smt_enabled":    report.PlatformInfo&(1<<0) != 0,
		"measurement":             hex.EncodeToString(report.Measurement),
		"report_data":             hex.EncodeToString(report.ReportData),
		"init_data":               hex.EncodeToString(report.HostData),
		"chip_id":                 hex.EncodeToString(report.ChipId),
	}
}

// bindReportData checks that a report-data field carries the expected
// report data, zero-padded or truncated to the field's size as trustee's
// regularize_data does, in constant time. Without expected report data the
// evidence is refused unless ev.NoBinding.
func bindReportData(field string, got []byte, ev Evidence) error {
	if len(ev.ReportData) == 0 {
		if ev.NoBinding {
			return nil
		}
		return fmt.Errorf("%s: no expected report data to compare with: %w", field, spec.ErrIntegrity)
	}
	if subtle.ConstantTimeCompare(got, protocol.ReportData(ev.ReportData, len(got))) != 1 {
		return fmt.Errorf("%s does not carry the expected report data (nonce and tee key): %w", field, spec.ErrIntegrity)
	}
	return nil
}

// bindInitData checks that a field (SNP HOST_DATA, TDX MRCONFIGID) carries
// the digest of the request's init-data, padded or truncated to the field's
// size. Without init-data nothing is checked, as in trustee.
func bindInitData(field string, got []byte, ev Evidence) error {
	if ev.InitData == nil {
		return nil
	}
	digest, err := InitDataDigest(ev.InitData)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, protocol.ReportData(digest, len(got))) != 1 {
		return fmt.Errorf("%s does not carry the init-data digest: %w", field, spec.ErrIntegrity)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ReadBounded reads a file of at most max bytes; a longer one wraps
// spec.ErrUnsupported (evidence, certificates and collateral are small).
func ReadBounded(path string, max int64) ([]byte, error) { return bounded.ReadFile(path, max) }
