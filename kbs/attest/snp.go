package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Bounds on hardware evidence, checked before anything is parsed.
const (
	// MaxEvidenceBytes bounds tee-evidence.primary_evidence for snp and tdx.
	MaxEvidenceBytes = 256 << 10
	// SNPReportSize is the size of an SEV-SNP ATTESTATION_REPORT.
	SNPReportSize = abi.ReportSize
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
func NewSNP(cfg Config) Verifier { return snpVerifier{cfg} }

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
		Report    *SNPReportJSON `json:"attestation_report"`
		CertChain []snpCertEntry `json:"cert_chain"`
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
	if err := verifySNPChain(vek, certs, signer, gen, v.cfg.now()); err != nil {
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

// snpGeneration maps CPUID family and model to a processor generation as
// trustee does (and as the sev crate's Generation::identify_cpu does).
func snpGeneration(family, model byte) (string, error) {
	switch {
	case family == 0x19 && model <= 0x0F:
		return "Milan", nil
	case family == 0x19 && (model >= 0x10 && model <= 0x1F || model >= 0xA0 && model <= 0xAF):
		return "Genoa", nil
	case family == 0x1A && model <= 0x11:
		return "Turin", nil
	}
	return "", fmt.Errorf("snp report from CPU family 0x%x model 0x%x: not Milan, Genoa or Turin: %w", family, model, spec.ErrUnsupported)
}

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
type snpTCB struct{ fmc, bootloader, tee, snp, microcode byte }

func decodeSNPTCB(b []byte, gen string) snpTCB {
	if gen == "Turin" {
		return snpTCB{fmc: b[0], bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7]}
	}
	return snpTCB{bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7]}
}

// snpHWID is the hardware id trustee's KDS paths use: CHIP_ID, its first 8
// bytes on Turin.
func snpHWID(raw []byte, gen string) string {
	chip := raw[0x1A0:0x1E0]
	if gen == "Turin" {
		chip = chip[:8]
	}
	return hex.EncodeToString(chip)
}

func (t snpTCB) prefix(gen string) string {
	s := fmt.Sprintf("bl%02d_tee%02d_snp%02d_ucode%02d", t.bootloader, t.tee, t.snp, t.microcode)
	if gen == "Turin" {
		s += fmt.Sprintf("_fmc%02d", t.fmc)
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
			for _, name := range []string{tcb.prefix(gen) + "_vcek.der", "vcek.der"} {
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
	c, err := trust.ParseCert(der)
	if err != nil {
		return nil, fmt.Errorf("snp %v certificate does not parse: %v: %w", signer, err, spec.ErrIntegrity)
	}
	return c, nil
}

// fetchVCEK asks AMD's KDS for the VCEK of this chip and reported TCB
// (only with Config.FetchCollateral), with go-sev-guest's retrying getter.
func fetchVCEK(ctx context.Context, raw []byte, gen string, tcb snpTCB) ([]byte, error) {
	q := fmt.Sprintf("blSPL=%02d&teeSPL=%02d&snpSPL=%02d&ucodeSPL=%02d", tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode)
	if gen == "Turin" {
		q = fmt.Sprintf("fmcSPL=%02d&", tcb.fmc) + q
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

// snpRoots returns AMD's ARK and the ASK (VCEK) or ASVK (VLEK) of a
// processor generation, as embedded in go-sev-guest.
func snpRoots(gen string, signer abi.ReportSigner) (ark, ica *x509.Certificate, err error) {
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
	ark, ica, err := snpRoots(gen, signer)
	if err != nil {
		return err
	}
	wantCN, wantIssuer := "SEV-VCEK", "SEV-"+gen
	if signer == abi.VlekReportSigner {
		wantCN, wantIssuer = "SEV-VLEK", "SEV-VLEK-"+gen
	}
	if vek.Subject.CommonName != wantCN || vek.Issuer.CommonName != wantIssuer {
		return fmt.Errorf("snp endorsement certificate is %q issued by %q, want %q issued by %q: %w",
			vek.Subject.CommonName, vek.Issuer.CommonName, wantCN, wantIssuer, spec.ErrIntegrity)
	}
	if pub, ok := vek.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P384() {
		return fmt.Errorf("snp %s certificate key is not ECDSA P-384: %w", wantCN, spec.ErrIntegrity)
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(ica)
	if certs.ark != nil {
		given, err := x509.ParseCertificate(certs.ark)
		if err != nil {
			return fmt.Errorf("snp evidence ARK does not parse: %v: %w", err, spec.ErrIntegrity)
		}
		if !bytes.Equal(given.RawSubjectPublicKeyInfo, ark.RawSubjectPublicKeyInfo) {
			return fmt.Errorf("snp evidence ARK is not AMD's %s ARK: %w", gen, spec.ErrIntegrity)
		}
	}
	if certs.ask != nil {
		given, err := x509.ParseCertificate(certs.ask)
		if err != nil {
			return fmt.Errorf("snp evidence ASK does not parse: %v: %w", err, spec.ErrIntegrity)
		}
		intermediates.AddCert(given) // used only if the ARK signed it
	}
	roots := x509.NewCertPool()
	roots.AddCert(ark)
	opts := x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := vek.Verify(opts); err != nil {
		return fmt.Errorf("snp %s certificate does not chain to AMD's %s ARK at %s: %v: %w", wantCN, gen, now.UTC().Format(time.RFC3339), err, spec.ErrIntegrity)
	}
	return nil
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
		{oidKDSBlSPL, "boot loader", &want.bootloader},
		{oidKDSTeeSPL, "TEE", &want.tee},
		{oidKDSSnpSPL, "SNP", &want.snp},
		{oidKDSUcodeSPL, "microcode", &want.microcode},
	}
	if gen == "Turin" {
		parts = append(parts, struct {
			oid  asn1.ObjectIdentifier
			name string
			dst  *byte
		}{oidKDSFmcSPL, "FMC", &want.fmc})
	}
	for _, p := range parts {
		if *p.dst, err = kdsSPL(vek, p.oid, p.name); err != nil {
			return err
		}
	}
	if got != want {
		return fmt.Errorf("snp reported TCB %s does not match the %v's %s: %w", got.prefix(gen), signer, want.prefix(gen), spec.ErrIntegrity)
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
		"reported_tcb_bootloader": int(tcb.bootloader),
		"reported_tcb_tee":        int(tcb.tee),
		"reported_tcb_snp":        int(tcb.snp),
		"reported_tcb_microcode":  int(tcb.microcode),
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
func ReadBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", path, max, spec.ErrUnsupported)
	}
	return b, nil
}

// SNPReportJSON is the sev crate's serde form of an SEV-SNP
// ATTESTATION_REPORT, the "attestation_report" of trustee's snp evidence.
// Byte strings are JSON arrays of numbers; fields a report version lacks
// are null.
type SNPReportJSON struct {
	Version          uint32         `json:"version"`
	GuestSVN         uint32         `json:"guest_svn"`
	Policy           uint64         `json:"policy"`
	FamilyID         byteList       `json:"family_id"`
	ImageID          byteList       `json:"image_id"`
	VMPL             uint32         `json:"vmpl"`
	SigAlgo          uint32         `json:"sig_algo"`
	CurrentTCB       snpTCBJSON     `json:"current_tcb"`
	PlatInfo         uint64         `json:"plat_info"`
	KeyInfo          uint32         `json:"key_info"`
	ReportData       byteList       `json:"report_data"`
	Measurement      byteList       `json:"measurement"`
	HostData         byteList       `json:"host_data"`
	IDKeyDigest      byteList       `json:"id_key_digest"`
	AuthorKeyDigest  byteList       `json:"author_key_digest"`
	ReportID         byteList       `json:"report_id"`
	ReportIDMA       byteList       `json:"report_id_ma"`
	ReportedTCB      snpTCBJSON     `json:"reported_tcb"`
	CPUIDFamID       *uint8         `json:"cpuid_fam_id"`
	CPUIDModID       *uint8         `json:"cpuid_mod_id"`
	CPUIDStep        *uint8         `json:"cpuid_step"`
	ChipID           byteList       `json:"chip_id"`
	CommittedTCB     snpTCBJSON     `json:"committed_tcb"`
	Current          snpVersionJSON `json:"current"`
	Committed        snpVersionJSON `json:"committed"`
	LaunchTCB        snpTCBJSON     `json:"launch_tcb"`
	LaunchMitVector  *uint64        `json:"launch_mit_vector"`
	CurrentMitVector *uint64        `json:"current_mit_vector"`
	Signature        struct {
		R byteList `json:"r"`
		S byteList `json:"s"`
	} `json:"signature"`
}

type snpTCBJSON struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

type snpVersionJSON struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

// encodeGeneration is the processor generation the sev crate encodes a
// report's TCB fields for: from CPUID (version 3 and later) or, for
// version 2, "Turin" when only the first 8 bytes of CHIP_ID are set.
func encodeGeneration(version uint32, family, model *uint8, chip []byte) (string, error) {
	if version == 2 {
		if allZero(chip) {
			return "", errors.New("version 2 report with a masked CHIP_ID: processor generation unknown")
		}
		if allZero(chip[8:]) {
			return "Turin", nil
		}
		return "Genoa", nil
	}
	if family == nil || model == nil {
		return "", fmt.Errorf("version %d report without cpuid_fam_id and cpuid_mod_id", version)
	}
	gen, err := snpGeneration(*family, *model)
	if err != nil {
		return "", errors.Unwrap(err)
	}
	return gen, nil
}

func (t snpTCBJSON) put(b []byte, gen string) {
	if gen == "Turin" {
		if t.FMC != nil {
			b[0] = *t.FMC
		}
		b[1], b[2], b[3], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
		return
	}
	b[0], b[1], b[6], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
}

func tcbJSON(b []byte, gen string) snpTCBJSON {
	t := decodeSNPTCB(b, gen)
	j := snpTCBJSON{Bootloader: t.bootloader, TEE: t.tee, SNP: t.snp, Microcode: t.microcode}
	if gen == "Turin" {
		j.FMC = &t.fmc
	}
	return j
}

// Bytes encodes the report into its 1184 firmware bytes as the sev crate's
// Encoder does: reserved fields zero, TCB fields in the layout of the
// processor generation.
func (r *SNPReportJSON) Bytes() ([]byte, error) {
	for _, f := range []struct {
		name string
		b    byteList
		n    int
	}{
		{"family_id", r.FamilyID, 16}, {"image_id", r.ImageID, 16}, {"report_data", r.ReportData, 64},
		{"measurement", r.Measurement, 48}, {"host_data", r.HostData, 32}, {"id_key_digest", r.IDKeyDigest, 48},
		{"author_key_digest", r.AuthorKeyDigest, 48}, {"report_id", r.ReportID, 32}, {"report_id_ma", r.ReportIDMA, 32},
		{"chip_id", r.ChipID, 64}, {"signature.r", r.Signature.R, 72}, {"signature.s", r.Signature.S, 72},
	} {
		if len(f.b) != f.n {
			return nil, fmt.Errorf("%s has %d bytes, want %d", f.name, len(f.b), f.n)
		}
	}
	if r.Version < 2 {
		return nil, fmt.Errorf("report version %d", r.Version)
	}
	gen, err := encodeGeneration(r.Version, r.CPUIDFamID, r.CPUIDModID, r.ChipID)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	b := make([]byte, SNPReportSize)
	le.PutUint32(b[0x00:], r.Version)
	le.PutUint32(b[0x04:], r.GuestSVN)
	le.PutUint64(b[0x08:], r.Policy)
	copy(b[0x10:], r.FamilyID)
	copy(b[0x20:], r.ImageID)
	le.PutUint32(b[0x30:], r.VMPL)
	le.PutUint32(b[0x34:], r.SigAlgo)
	r.CurrentTCB.put(b[0x38:0x40], gen)
	le.PutUint64(b[0x40:], r.PlatInfo)
	le.PutUint32(b[0x48:], r.KeyInfo)
	copy(b[0x50:], r.ReportData)
	copy(b[0x90:], r.Measurement)
	copy(b[0xC0:], r.HostData)
	copy(b[0xE0:], r.IDKeyDigest)
	copy(b[0x110:], r.AuthorKeyDigest)
	copy(b[0x140:], r.ReportID)
	copy(b[0x160:], r.ReportIDMA)
	r.ReportedTCB.put(b[0x180:0x188], gen)
	if r.Version >= 3 {
		for i, p := range []*uint8{r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep} {
			if p != nil {
				b[0x188+i] = *p
			}
		}
	}
	copy(b[0x1A0:], r.ChipID)
	r.CommittedTCB.put(b[0x1E0:0x1E8], gen)
	b[0x1E8], b[0x1E9], b[0x1EA] = r.Current.Build, r.Current.Minor, r.Current.Major
	b[0x1EC], b[0x1ED], b[0x1EE] = r.Committed.Build, r.Committed.Minor, r.Committed.Major
	r.LaunchTCB.put(b[0x1F0:0x1F8], gen)
	if r.Version >= 5 {
		if r.LaunchMitVector != nil {
			le.PutUint64(b[0x1F8:], *r.LaunchMitVector)
		}
		if r.CurrentMitVector != nil {
			le.PutUint64(b[0x200:], *r.CurrentMitVector)
		}
	}
	copy(b[0x2A0:], r.Signature.R)
	copy(b[0x2E8:], r.Signature.S)
	return b, nil
}

// SNPReportFromBytes decodes a report's firmware bytes into the sev
// crate's serde form, as guest-components' attester does with
// AttestationReport::from_bytes.
func SNPReportFromBytes(raw []byte) (*SNPReportJSON, error) {
	if len(raw) != SNPReportSize {
		return nil, fmt.Errorf("snp report of %d bytes, want %d: %w", len(raw), SNPReportSize, spec.ErrUnsupported)
	}
	le := binary.LittleEndian
	r := &SNPReportJSON{Version: le.Uint32(raw[0x00:])}
	if r.Version < 2 {
		return nil, fmt.Errorf("snp report version %d: %w", r.Version, spec.ErrUnsupported)
	}
	var fam, mod, step *uint8
	if r.Version >= 3 {
		f, m, s := raw[0x188], raw[0x189], raw[0x18A]
		fam, mod, step = &f, &m, &s
	}
	gen, err := encodeGeneration(r.Version, fam, mod, raw[0x1A0:0x1E0])
	if err != nil {
		return nil, fmt.Errorf("snp report: %v: %w", err, spec.ErrUnsupported)
	}
	clone := func(lo, hi int) byteList { return append(byteList(nil), raw[lo:hi]...) }
	r.GuestSVN = le.Uint32(raw[0x04:])
	r.Policy = le.Uint64(raw[0x08:])
	r.FamilyID, r.ImageID = clone(0x10, 0x20), clone(0x20, 0x30)
	r.VMPL, r.SigAlgo = le.Uint32(raw[0x30:]), le.Uint32(raw[0x34:])
	r.CurrentTCB = tcbJSON(raw[0x38:0x40], gen)
	r.PlatInfo, r.KeyInfo = le.Uint64(raw[0x40:]), le.Uint32(raw[0x48:])
	r.ReportData, r.Measurement, r.HostData = clone(0x50, 0x90), clone(0x90, 0xC0), clone(0xC0, 0xE0)
	r.IDKeyDigest, r.AuthorKeyDigest = clone(0xE0, 0x110), clone(0x110, 0x140)
	r.ReportID, r.ReportIDMA = clone(0x140, 0x160), clone(0x160, 0x180)
	r.ReportedTCB = tcbJSON(raw[0x180:0x188], gen)
	r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = fam, mod, step
	r.ChipID = clone(0x1A0, 0x1E0)
	r.CommittedTCB = tcbJSON(raw[0x1E0:0x1E8], gen)
	r.Current = snpVersionJSON{Build: raw[0x1E8], Minor: raw[0x1E9], Major: raw[0x1EA]}
	r.Committed = snpVersionJSON{Build: raw[0x1EC], Minor: raw[0x1ED], Major: raw[0x1EE]}
	r.LaunchTCB = tcbJSON(raw[0x1F0:0x1F8], gen)
	if r.Version >= 5 {
		l, c := le.Uint64(raw[0x1F8:]), le.Uint64(raw[0x200:])
		r.LaunchMitVector, r.CurrentMitVector = &l, &c
	}
	r.Signature.R, r.Signature.S = clone(0x2A0, 0x2E8), clone(0x2E8, 0x330)
	return r, nil
}

// SNPCert is one entry of an SNP evidence's cert_chain: a certificate
// table entry of the extended report.
type SNPCert struct {
	// Type is "ARK", "ASK", "VCEK", "VLEK", "CRL", or a GUID for any other
	// entry (serialized as {"OTHER": "<guid>"}).
	Type string
	DER  []byte
}

// SNPEvidence builds trustee's snp evidence from a report's firmware bytes
// and the certificate table of the extended report (may be empty: then
// "cert_chain" is null, as guest-components sends it without certificates).
func SNPEvidence(report []byte, certs []SNPCert) (json.RawMessage, error) {
	r, err := SNPReportFromBytes(report)
	if err != nil {
		return nil, err
	}
	var chain []snpCertEntry
	for _, c := range certs {
		e := snpCertEntry{CertType: snpCertType{Name: c.Type}, Data: c.DER}
		switch c.Type {
		case "ARK", "ASK", "VCEK", "VLEK", "CRL":
		default:
			e.CertType = snpCertType{Name: "OTHER", GUID: c.Type}
		}
		chain = append(chain, e)
	}
	return json.Marshal(struct {
		Report    *SNPReportJSON `json:"attestation_report"`
		CertChain []snpCertEntry `json:"cert_chain"`
	}{r, chain})
}

type snpCertEntry struct {
	CertType snpCertType `json:"cert_type"`
	Data     byteList    `json:"data"`
}

// snpCertType is the sev crate's CertType: a unit variant name or
// {"OTHER": "<guid>"}.
type snpCertType struct{ Name, GUID string }

func (t snpCertType) String() string { return t.Name }

func (t snpCertType) MarshalJSON() ([]byte, error) {
	if t.Name == "OTHER" {
		return json.Marshal(map[string]string{"OTHER": t.GUID})
	}
	return json.Marshal(t.Name)
}

func (t *snpCertType) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &t.Name)
	}
	var other struct {
		GUID *string `json:"OTHER"`
	}
	if err := json.Unmarshal(b, &other); err != nil || other.GUID == nil {
		return fmt.Errorf("cert_type: want a name or {\"OTHER\": guid}")
	}
	t.Name, t.GUID = "OTHER", *other.GUID
	return nil
}

// byteList is a byte string that JSON carries as an array of numbers 0 to
// 255, the way serde serializes Rust byte arrays and Vec<u8>.
type byteList []byte

func (b byteList) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 2+4*len(b))
	out = append(out, '[')
	for i, v := range b {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendUint(out, uint64(v), 10)
	}
	return append(out, ']'), nil
}

func (b *byteList) UnmarshalJSON(data []byte) error {
	bad := errors.New("want an array of byte values 0 to 255")
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return bad
	}
	out := make(byteList, 0, len(data)/2)
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		*b = out
		return nil
	}
	for {
		start, n := i, 0
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			if n = n*10 + int(data[i]-'0'); n > 255 || i > start && data[start] == '0' {
				return bad
			}
			i++
		}
		if i == start {
			return bad
		}
		out = append(out, byte(n))
		if i = skipSpace(data, i); i >= len(data) {
			return bad
		}
		if data[i] == ']' {
			break
		}
		if data[i] != ',' {
			return bad
		}
		i = skipSpace(data, i+1)
	}
	*b = out
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
