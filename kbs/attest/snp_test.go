package attest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// snpAt is when all recorded SNP evidence in testdata/snp is valid: every
// VCEK/VLEK, ASK and ARK is within its validity period (the latest
// notBefore is the Genoa VCEK's 2025-05-27, the earliest notAfter the
// VLEK's 2025-12-10).
var snpAt = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

func atTime(t time.Time) func() time.Time { return func() time.Time { return t } }

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trusteeSNPClaimKeys is the key set of trustee's parse_tee_evidence.
var trusteeSNPClaimKeys = []string{
	"chip_id", "init_data", "measurement", "platform_smt_enabled", "platform_tsme_enabled",
	"policy_abi_major", "policy_abi_minor", "policy_debug_allowed", "policy_migrate_ma",
	"policy_single_socket", "policy_smt_allowed", "report_data", "reported_tcb_bootloader",
	"reported_tcb_microcode", "reported_tcb_snp", "reported_tcb_tee",
}

func claimKeys(c Claims) []string {
	var keys []string
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The guest-components evidence of trustee's end-to-end test (a Genoa
// guest, report version 3, its VCEK in cert_chain) verifies through the JSON
// form, re-encoded as the sev crate does.
func TestSNPTrusteeEvidence(t *testing.T) {
	raw := readTestdata(t, "snp/trustee-e2e-evidence.json")
	rd := mustHex(t, "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0")
	v := NewSNP(Config{Now: atTime(snpAt)})
	c, err := v.Verify(context.Background(), Evidence{Tee: protocol.TeeSNP, Primary: raw, ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	if got := claimKeys(c); !reflect.DeepEqual(got, trusteeSNPClaimKeys) {
		t.Fatalf("claim keys: got %v, want trustee's %v", got, trusteeSNPClaimKeys)
	}
	want := Claims{
		"measurement":             "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e",
		"report_data":             hex.EncodeToString(rd),
		"init_data":               strings.Repeat("00", 32),
		"chip_id":                 "371c55d6d15cb50f16dc31d39a24e300caaabff4431e841111429b73ec45ad67ea6e687ffae7bf84b54a5d0e6d79b3ef6ff0bd8b4cff94c2163af5c5de8718e8",
		"policy_abi_major":        0,
		"policy_abi_minor":        0,
		"policy_smt_allowed":      true,
		"policy_migrate_ma":       false,
		"policy_debug_allowed":    false,
		"policy_single_socket":    false,
		"reported_tcb_bootloader": 10,
		"reported_tcb_tee":        0,
		"reported_tcb_snp":        23,
		"reported_tcb_microcode":  25,
		"platform_tsme_enabled":   false,
		"platform_smt_enabled":    true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("claims:\n got %v\nwant %v", c, want)
	}
}

// coffer's attester form of a report is the JSON guest-components sent for
// the same report (the sev crate's serde form; coffer adds the version-5
// mitigation vector fields as null, which the sev crate reads as absent).
func TestSNPEvidenceJSONMatchesGuestComponents(t *testing.T) {
	recorded := readTestdata(t, "snp/trustee-e2e-evidence.json")
	raw, certs, err := parseSNPEvidence(recorded)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := protocol.SNPEvidence(raw, []protocol.SNPCert{{Type: "VCEK", DER: certs.vcek}})
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(ours, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(recorded, &want); err != nil {
		t.Fatal(err)
	}
	report := got["attestation_report"].(map[string]any)
	for _, k := range []string{"launch_mit_vector", "current_mit_vector"} {
		if v, ok := report[k]; !ok || v != nil {
			t.Fatalf("%s: got %v, want null for a version 3 report", k, v)
		}
		delete(report, k)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("coffer's snp evidence differs from guest-components':\n got %s\nwant %s", ours, recorded)
	}
}

// Raw reports round-trip through the JSON form unchanged (reserved bytes
// are zero in real reports).
func TestSNPReportJSONRoundTrip(t *testing.T) {
	for _, name := range []string{"snp/trustee-test-report.bin", "snp/trustee-test-vlek-report.bin", "snp/gosevguest-attestation.bin"} {
		raw := readTestdata(t, name)
		ev, err := protocol.SNPEvidence(raw, nil)
		if err != nil {
			t.Fatal(name, err)
		}
		if !bytes.Contains(ev, []byte(`"cert_chain":null`)) {
			t.Fatalf("%s: no certificates should give \"cert_chain\":null: %s", name, ev)
		}
		back, _, err := parseSNPEvidence(ev)
		if err != nil {
			t.Fatal(name, err)
		}
		if !bytes.Equal(back, raw) {
			t.Fatalf("%s: round trip changed the report", name)
		}
	}
}

// snpRaw is a recorded raw report with the certificate it was signed with.
type snpRaw struct {
	report, cert string
	claims       Claims // a few expected claims
}

var snpRawReports = map[string]snpRaw{
	// trustee deps/verifier/test_data/snp: Milan, report version 2, VCEK.
	"trustee-vcek": {"snp/trustee-test-report.bin", "snp/trustee-test-vcek.der", Claims{
		"measurement":          "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c",
		"policy_abi_minor":     31,
		"policy_debug_allowed": false,
		"reported_tcb_snp":     8, "reported_tcb_microcode": 115, "reported_tcb_bootloader": 3,
	}},
	// go-sev-guest verify/testdata: Milan, version 2, launched with the
	// DEBUG policy bit.
	"gosevguest-debug": {"snp/gosevguest-attestation.bin", "snp/gosevguest-vcek.der", Claims{
		"measurement":          "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
		"policy_debug_allowed": true,
		"report_data":          "0102030405" + strings.Repeat("00", 59),
	}},
}

func verifyRawSNP(t testing.TB, cfg Config, report, cert []byte, ev Evidence) (Claims, error) {
	t.Helper()
	var certs []protocol.SNPCert
	if cert != nil {
		certs = []protocol.SNPCert{{Type: "VCEK", DER: cert}}
	}
	primary, err := protocol.SNPEvidence(report, certs)
	if err != nil {
		t.Fatal(err)
	}
	ev.Tee, ev.Primary = protocol.TeeSNP, primary
	return NewSNP(cfg).Verify(context.Background(), ev)
}

func TestSNPRecordedReports(t *testing.T) {
	for name, r := range snpRawReports {
		t.Run(name, func(t *testing.T) {
			report, cert := readTestdata(t, r.report), readTestdata(t, r.cert)
			rd := report[0x50:0x90]
			c, err := verifyRawSNP(t, Config{Now: atTime(snpAt), AllowDebug: true}, report, cert, Evidence{ReportData: rd})
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range r.claims {
				if c[k] != want {
					t.Errorf("%s: got %v, want %v", k, c[k], want)
				}
			}
		})
	}
}

func TestSNPDebugRefused(t *testing.T) {
	r := snpRawReports["gosevguest-debug"]
	report, cert := readTestdata(t, r.report), readTestdata(t, r.cert)
	_, err := verifyRawSNP(t, Config{Now: atTime(snpAt)}, report, cert, Evidence{NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "debug") {
		t.Fatalf("got %v, want a refusal of the debug policy", err)
	}
}

// Tampering anywhere is refused: report body, signature, certificate, the
// binding, the time.
func TestSNPRefusals(t *testing.T) {
	r := snpRawReports["trustee-vcek"]
	report, cert := readTestdata(t, r.report), readTestdata(t, r.cert)
	rd := append([]byte(nil), report[0x50:0x80]...) // the 48-byte digest, zero-padded in the report
	flip := func(b []byte, at int) []byte {
		c := append([]byte(nil), b...)
		c[at] ^= 0x01
		return c
	}
	otherVCEK := readTestdata(t, "snp/gosevguest-vcek.der")
	tests := []struct {
		name         string
		report, cert []byte
		cfg          Config
		ev           Evidence
		want         error
		msg          string
	}{
		{"unchanged", report, cert, Config{}, Evidence{ReportData: rd}, nil, ""},
		{"measurement bit", flip(report, 0x90+7), cert, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "signature"},
		{"guest svn bit", flip(report, 0x04), cert, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "signature"},
		{"signature r bit", flip(report, 0x2A0+5), cert, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "signature"},
		{"signature s bit", flip(report, 0x2E8+40), cert, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "signature"},
		{"VCEK tbs bit", report, flip(cert, 42), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, ""},
		{"VCEK signature bit", report, flip(cert, len(cert)-10), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "chain"},
		{"another chip's VCEK", report, otherVCEK, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, ""},
		{"no VCEK", report, nil, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "carries none"},
		{"other report data", report, cert, Config{}, Evidence{ReportData: flip(rd, 3)}, spec.ErrIntegrity, "REPORT_DATA"},
		{"report data bit", flip(report, 0x50), cert, Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "REPORT_DATA"},
		{"no report data", report, cert, Config{}, Evidence{}, spec.ErrIntegrity, "no expected report data"},
		{"init-data not in HOST_DATA", report, cert, Config{}, Evidence{ReportData: rd, InitData: &protocol.InitData{Format: "toml", Body: "version = \"0.1.0\"\nalgorithm = \"sha256\"\n"}}, spec.ErrIntegrity, "HOST_DATA"},
		{"VCEK expired", report, cert, Config{Now: atTime(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))}, Evidence{ReportData: rd}, spec.ErrIntegrity, "chain"},
		{"VCEK not yet valid", report, cert, Config{Now: atTime(time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC))}, Evidence{ReportData: rd}, spec.ErrIntegrity, "chain"},
		{"short report", report[:1000], cert, Config{}, Evidence{ReportData: rd}, spec.ErrUnsupported, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Now == nil {
				tt.cfg.Now = atTime(snpAt)
			}
			var err error
			if len(tt.report) != SNPReportSize {
				_, err = snpVerifier{tt.cfg}.verifyReport(context.Background(), tt.report, snpCerts{vcek: tt.cert}, tt.ev)
			} else {
				_, err = verifyRawSNP(t, tt.cfg, tt.report, tt.cert, tt.ev)
			}
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

// A bit flipped in the JSON form's report fields is refused too.
func TestSNPJSONTampered(t *testing.T) {
	raw := readTestdata(t, "snp/trustee-e2e-evidence.json")
	var ev map[string]any
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	m := ev["attestation_report"].(map[string]any)["measurement"].([]any)
	m[0] = m[0].(float64) + 1
	tampered, _ := json.Marshal(ev)
	_, err := NewSNP(Config{Now: atTime(snpAt)}).Verify(context.Background(), Evidence{Primary: tampered, NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("got %v, want a signature failure", err)
	}
}

// The VLEK report of trustee's test data (an AWS Milan guest) chains to
// AMD's ARK through the ASVK and is signed by its VLEK; the verifier still
// refuses it, as trustee does, because it was requested at VMPL 1.
func TestSNPVLEK(t *testing.T) {
	report, vlekDER := readTestdata(t, "snp/trustee-test-vlek-report.bin"), readTestdata(t, "snp/trustee-test-vlek.der")
	v := snpVerifier{Config{Now: atTime(snpAt)}}
	vlek, err := v.endorsementKey(context.Background(), snpCerts{vlek: vlekDER}, abi.VlekReportSigner, "Milan", report)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifySNPChain(vlek, snpCerts{}, abi.VlekReportSigner, "Milan", snpAt); err != nil {
		t.Fatal(err)
	}
	if err := verify.SnpReportSignature(report, vlek); err != nil {
		t.Fatal(err)
	}
	proto, _ := abi.ReportToProto(report)
	if err := checkSNPTCB(report, proto, vlek, abi.VlekReportSigner, "Milan"); err != nil {
		t.Fatal(err)
	}
	// A VLEK is not accepted where the ASK (VCEK chain) is expected.
	if err := verifySNPChain(vlek, snpCerts{}, abi.VcekReportSigner, "Milan", snpAt); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("VLEK as VCEK: got %v", err)
	}
	primary, _ := protocol.SNPEvidence(report, []protocol.SNPCert{{Type: "VLEK", DER: vlekDER}})
	_, err = v.Verify(context.Background(), Evidence{Primary: primary, NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "VMPL 1") {
		t.Fatalf("got %v, want a VMPL refusal", err)
	}
}

// Without a VCEK in the evidence, the verifier reads it from the
// collateral directory (trustee's KDS offline store layout).
func TestSNPCollateralVCEK(t *testing.T) {
	report, cert := readTestdata(t, "snp/trustee-e2e-evidence.json"), []byte(nil)
	raw, certs, err := parseSNPEvidence(report)
	if err != nil {
		t.Fatal(err)
	}
	cert = certs.vcek
	hwid := hex.EncodeToString(raw[0x1A0:0x1E0])
	for _, name := range []string{"bl10_tee00_snp23_ucode25_vcek.der", "vcek.der"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "snp", "vcek", hwid, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, cert, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := snpVerifier{Config{Now: atTime(snpAt), Collateral: dir}}.verifyReport(context.Background(), raw, snpCerts{}, Evidence{NoBinding: true})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	_, err = snpVerifier{Config{Now: atTime(snpAt), Collateral: t.TempDir()}}.verifyReport(context.Background(), raw, snpCerts{}, Evidence{NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "vcek.der") || !strings.Contains(err.Error(), "not enabled") {
		t.Fatalf("got %v, want a missing-VCEK refusal naming the paths", err)
	}
}

func TestSNPEvidenceCertificates(t *testing.T) {
	raw := readTestdata(t, "snp/trustee-e2e-evidence.json")
	_, certs, _ := parseSNPEvidence(raw)
	report, _, _ := parseSNPEvidence(raw)
	v := snpVerifier{Config{Now: atTime(snpAt)}}
	// An ARK that is not AMD's (here: the VCEK posing as one) is refused.
	_, err := v.verifyReport(context.Background(), report, snpCerts{vcek: certs.vcek, ark: certs.vcek}, Evidence{NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "ARK") {
		t.Fatalf("foreign ARK: got %v", err)
	}
	// AMD's own ARK and ASK are accepted.
	ark, ask, err := snpRoots("Genoa", abi.VcekReportSigner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.verifyReport(context.Background(), report, snpCerts{vcek: certs.vcek, ark: ark.Raw, ask: ask.Raw}, Evidence{NoBinding: true}); err != nil {
		t.Fatal(err)
	}
	// A Milan ASK does not help a Genoa VCEK.
	_, milanASK, _ := snpRoots("Milan", abi.VcekReportSigner)
	if _, err := v.verifyReport(context.Background(), report, snpCerts{vcek: certs.vcek, ask: milanASK.Raw}, Evidence{NoBinding: true}); err != nil {
		t.Fatal(err)
	}
}

func TestSNPMalformed(t *testing.T) {
	valid := readTestdata(t, "snp/trustee-e2e-evidence.json")
	many := `{"attestation_report":null,"cert_chain":[` + strings.Repeat(`{"cert_type":"CRL","data":[]},`, maxSNPCerts) + `{"cert_type":"CRL","data":[]}]}`
	tests := map[string][]byte{
		"too large":      append(valid, bytes.Repeat([]byte(" "), MaxEvidenceBytes)...),
		"not json":       []byte(`{"attestation_report":`),
		"no report":      []byte(`{"cert_chain":null}`),
		"report string":  []byte(`{"attestation_report":"AAAA"}`),
		"byte over 255":  bytes.Replace(valid, []byte(`"measurement":[106,`), []byte(`"measurement":[256,`), 1),
		"negative byte":  bytes.Replace(valid, []byte(`"measurement":[106,`), []byte(`"measurement":[-1,`), 1),
		"short array":    bytes.Replace(valid, []byte(`"measurement":[106,`), []byte(`"measurement":[`), 1),
		"base64 data":    bytes.Replace(valid, []byte(`"measurement":[106,`), []byte(`"measurement":"ag==","x":[`), 1),
		"many certs":     []byte(many),
		"bad cert type":  bytes.Replace(valid, []byte(`"cert_type":"VCEK"`), []byte(`"cert_type":7`), 1),
		"unknown family": bytes.Replace(valid, []byte(`"cpuid_fam_id":25`), []byte(`"cpuid_fam_id":23`), 1),
		"version 1":      bytes.Replace(valid, []byte(`"version":3`), []byte(`"version":1`), 1),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := NewSNP(Config{Now: atTime(snpAt)}).Verify(context.Background(), Evidence{Primary: in, NoBinding: true})
			if !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("got %v, want %v", err, spec.ErrUnsupported)
			}
		})
	}
}

func FuzzSNPEvidence(f *testing.F) {
	f.Add(readTestdata(f, "snp/trustee-e2e-evidence.json"))
	for _, r := range snpRawReports {
		ev, err := protocol.SNPEvidence(readTestdata(f, r.report), []protocol.SNPCert{{Type: "VCEK", DER: readTestdata(f, r.cert)}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(ev))
	}
	f.Add([]byte(`{"attestation_report":{"version":5,"cpuid_fam_id":26,"cpuid_mod_id":2},"cert_chain":[{"cert_type":{"OTHER":"x"},"data":[]}]}`))
	v := NewSNP(Config{Now: atTime(snpAt), AllowDebug: true})
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		c, err := v.Verify(context.Background(), Evidence{Primary: in, NoBinding: true})
		if err == nil && c["measurement"] == nil {
			t.Fatal("accepted evidence without a measurement")
		}
		if err != nil && !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
	})
}

func FuzzSNPReport(f *testing.F) {
	for _, r := range snpRawReports {
		f.Add(readTestdata(f, r.report))
	}
	cert := readTestdata(f, "snp/trustee-test-vcek.der")
	v := snpVerifier{Config{Now: atTime(snpAt), AllowDebug: true}}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		_, err := v.verifyReport(context.Background(), in, snpCerts{vcek: cert}, Evidence{NoBinding: true})
		if err != nil && !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if r, err := protocol.SNPReportFromBytes(in); err == nil {
			if b, err := r.Bytes(); err != nil || len(b) != SNPReportSize {
				t.Fatalf("decoded report does not encode: %v", err)
			}
		}
	})
}
