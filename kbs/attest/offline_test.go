package attest

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/spec"
)

func ExampleVerifyFile() {
	report, _ := os.ReadFile("testdata/snp/trustee-test-report.bin")
	vcek, _ := os.ReadFile("testdata/snp/trustee-test-vcek.der")
	claims, err := VerifyFile(context.Background(), "snp", report,
		WithCert(vcek), WithTime(time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims["measurement"])
	// Output: a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c
}

func TestVerifyFile(t *testing.T) {
	ctx := context.Background()
	snpReport, vcek := readTestdata(t, "snp/trustee-test-report.bin"), readTestdata(t, "snp/trustee-test-vcek.der")
	vcekPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vcek})
	e2e := readTestdata(t, "snp/trustee-e2e-evidence.json")
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	atSNP, atTDX := WithTime(snpAt), WithTime(tdxAt)
	tests := []struct {
		name string
		tee  string
		raw  []byte
		opts []OfflineOption
		want error
		key  string // a claim that must be present
	}{
		{"snp raw + DER", "snp", snpReport, []OfflineOption{WithCert(vcek), atSNP}, nil, "measurement"},
		{"snp raw + PEM", "snp", snpReport, []OfflineOption{WithCert(vcekPEM), atSNP}, nil, "measurement"},
		{"snp raw + report data", "snp", snpReport, []OfflineOption{WithCert(vcek), atSNP, WithReportData(snpReport[0x50:0x80])}, nil, "measurement"},
		{"snp raw, wrong report data", "snp", snpReport, []OfflineOption{WithCert(vcek), atSNP, WithReportData([]byte{1})}, spec.ErrIntegrity, ""},
		{"snp raw without cert", "snp", snpReport, []OfflineOption{atSNP}, spec.ErrIntegrity, ""},
		{"snp json", "snp", e2e, []OfflineOption{atSNP}, nil, "chip_id"},
		{"snp json + conflicting cert", "snp", e2e, []OfflineOption{atSNP, WithCert(vcek)}, spec.ErrUnsupported, ""},
		{"snp wrong size", "snp", snpReport[:100], nil, spec.ErrUnsupported, ""},
		{"tdx raw", "tdx", quote, []OfflineOption{atTDX, WithCollateral("testdata"), WithAllowDebug()}, nil, "quote"},
		{"tdx json", "tdx", tdxEvidence(quote), []OfflineOption{atTDX, WithCollateral("testdata"), WithAllowDebug()}, nil, "td_attributes"},
		{"tdx debug refused", "tdx", quote, []OfflineOption{atTDX, WithCollateral("testdata")}, spec.ErrIntegrity, ""},
		{"tdx with cert", "tdx", quote, []OfflineOption{WithCert(vcek)}, spec.ErrUnsupported, ""},
		{"unknown tee", "sgx", quote, nil, spec.ErrUnsupported, ""},
		{"report data too long", "snp", snpReport, []OfflineOption{WithReportData(make([]byte, 65))}, spec.ErrUnsupported, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := VerifyFile(ctx, tt.tee, tt.raw, tt.opts...)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c[tt.key] == nil {
					t.Fatalf("no %s claim in %v", tt.key, c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyFileTPMGoesToTheTPMVerifier(t *testing.T) {
	_, err := VerifyFile(context.Background(), "tpm", []byte(`{}`))
	if err == nil || strings.Contains(err.Error(), "offline verification knows") {
		t.Fatalf("got %v, want the tpm verifier's refusal", err)
	}
}
