package cli

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

// Recorded evidence of kbs/attest/testdata (see the READMEs there).
const attestTestdata = "../../kbs/attest/testdata"

func TestKBSVerifyEvidence(t *testing.T) {
	snpReport := filepath.Join(attestTestdata, "snp/trustee-test-report.bin")
	vcek := filepath.Join(attestTestdata, "snp/trustee-test-vcek.der")
	quote := filepath.Join(attestTestdata, "tdx/trustee-tdx-quote-4.dat")
	const snpMeasurement = "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"
	const mrTD = "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"

	out, err := runCoffer(t, "", "kbs", "verify-evidence", "--tee", "snp", "--evidence", snpReport, "--cert", vcek, "--at", "2025-07-01T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "measurement = "+snpMeasurement+"\n") || !strings.Contains(out, "\npolicy_debug_allowed = false\n") {
		t.Fatalf("snp output:\n%s", out)
	}

	out, err = runCoffer(t, "", "kbs", "verify-evidence", "--tee", "tdx", "--evidence", quote, "--collateral", attestTestdata,
		"--at", "2023-07-01T01:00:00Z", "--allow-debug")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "quote.body.mr_td = "+mrTD+"\n") || !strings.Contains(out, "\ntd_attributes.debug = true\n") {
		t.Fatalf("tdx output:\n%s", out)
	}

	out, err = runCoffer(t, "", "kbs", "verify-evidence", "--tee", "snp", "--evidence", snpReport, "--cert", vcek, "--at", "2025-07-01T00:00:00Z", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(out), &claims); err != nil || claims["measurement"] != snpMeasurement {
		t.Fatalf("json output: %v\n%s", err, out)
	}

	// One flipped bit in the report: an integrity failure (exit code 4).
	report, err := os.ReadFile(snpReport)
	if err != nil {
		t.Fatal(err)
	}
	report[0x90] ^= 1
	flipped := filepath.Join(t.TempDir(), "report.bin")
	if err := os.WriteFile(flipped, report, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runCoffer(t, "", "kbs", "verify-evidence", "--tee", "snp", "--evidence", flipped, "--cert", vcek, "--at", "2025-07-01T00:00:00Z")
	if !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("flipped report: got %v, want %v", err, spec.ErrIntegrity)
	}
	q, err := os.ReadFile(quote)
	if err != nil {
		t.Fatal(err)
	}
	q[48+136] ^= 1 // MRTD
	flippedQuote := filepath.Join(t.TempDir(), "quote.dat")
	if err := os.WriteFile(flippedQuote, q, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runCoffer(t, "", "kbs", "verify-evidence", "--tee", "tdx", "--evidence", flippedQuote, "--collateral", attestTestdata,
		"--at", "2023-07-01T01:00:00Z", "--allow-debug")
	if !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("flipped quote: got %v, want %v", err, spec.ErrIntegrity)
	}
}

func TestKBSVerifyEvidenceUsage(t *testing.T) {
	snpReport := filepath.Join(attestTestdata, "snp/trustee-test-report.bin")
	for name, args := range map[string][]string{
		"no tee":         {"--evidence", snpReport},
		"no evidence":    {"--tee", "snp"},
		"bad hex":        {"--tee", "snp", "--evidence", snpReport, "--report-data", "xyz"},
		"long hex":       {"--tee", "snp", "--evidence", snpReport, "--report-data", strings.Repeat("00", 65)},
		"bad time":       {"--tee", "snp", "--evidence", snpReport, "--at", "yesterday"},
		"positional arg": {"--tee", "snp", "--evidence", snpReport, "extra"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := runCoffer(t, "", append([]string{"kbs", "verify-evidence"}, args...)...)
			if err == nil {
				t.Fatal("accepted")
			}
			if name != "positional arg" && !errors.Is(err, ErrUsage) {
				t.Fatalf("got %v, want %v", err, ErrUsage)
			}
		})
	}
}
