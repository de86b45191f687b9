package attest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// Attestation cost on the recorded hardware evidence of testdata (issue
// 19): one full verification per op, as the broker's /attest runs it.
// "cold" builds a fresh verifier each op (nothing cached: the first
// attestation of a platform); "warm" reuses one (the per-platform checks
// cached). Run: go test ./kbs/attest -run '^$' -bench Verify -count 5

func benchVerify(b *testing.B, newV func() Verifier, ev Evidence) {
	ctx := context.Background()
	if _, err := newV().Verify(ctx, ev); err != nil {
		b.Fatal(err)
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			if _, err := newV().Verify(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		v := newV()
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := v.Verify(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A Genoa guest's report with its VCEK in the evidence (trustee's e2e test).
func BenchmarkVerifySNP(b *testing.B) {
	raw := readTestdata(b, "snp/trustee-e2e-evidence.json")
	rd := mustHex(b, "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0")
	benchVerify(b, func() Verifier { return NewSNP(Config{Now: atTime(snpAt)}) },
		Evidence{Tee: protocol.TeeSNP, Primary: raw, ReportData: rd})
}

// trustee's TDX quote v4 against go-tdx-guest's recorded collateral (PCK
// chain, TCB info, QE identity, CRLs from testdata/tdx).
func BenchmarkVerifyTDX(b *testing.B) {
	quote := readTestdata(b, "tdx/trustee-tdx-quote-4.dat")
	cfg := tdxConfig()
	cfg.AllowDebug = true
	benchVerify(b, func() Verifier { return NewTDX(cfg) },
		Evidence{Tee: protocol.TeeTDX, Primary: tdxEvidence(quote), ReportData: quote[48+520 : 48+584]})
}

// A swtpm quote (RSA AK) with its PCRs and init-data binding.
func BenchmarkVerifyTPM(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("testdata", "tpm", "swtpm.json"))
	if err != nil {
		b.Fatal(err)
	}
	var rec tpmRecording
	if err := json.Unmarshal(raw, &rec); err != nil {
		b.Fatal(err)
	}
	rd, _ := hex.DecodeString(rec.ReportData)
	benchVerify(b, func() Verifier { return NewTPM(Config{}) },
		Evidence{Tee: protocol.TeeTPM, Primary: rec.Evidence, ReportData: rd, InitData: rec.InitData})
}
