package attest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// tdxAt is when go-tdx-guest's recorded collateral (testdata/tdx: TCB info
// and QE identity issued June 2023, next update July 2023) is current, as in
// go-tdx-guest's own tests.
var tdxAt = time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)

// tdxConfig verifies against the recorded collateral in testdata/tdx.
func tdxConfig() Config { return Config{Now: atTime(tdxAt), Collateral: "testdata"} }

func tdxEvidence(quote []byte) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"cc_eventlog": nil, "quote": base64.StdEncoding.EncodeToString(quote)})
	return b
}

// trustee's tdx_quote_4.dat (a TD launched with DEBUG) verifies with
// go-tdx-guest's recorded collateral for its FMSPC, and its claims are those
// of trustee's parse_tdx_claims_expected.json (generated from the same quote),
// less the event log coffer does not parse yet.
func TestTDXTrusteeQuoteClaims(t *testing.T) {
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	cfg := tdxConfig()
	cfg.AllowDebug = true
	rd := quote[48+520 : 48+584]
	c, err := NewTDX(cfg).Verify(context.Background(), Evidence{Tee: protocol.TeeTDX, Primary: tdxEvidence(quote), ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(readTestdata(t, "tdx/trustee-parse-tdx-claims-expected.json"), &want); err != nil {
		t.Fatal(err)
	}
	delete(want, "uefi_event_logs")
	got := map[string]any{}
	b, _ := json.Marshal(c)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tcb_status", "tcb_date", "advisory_ids"} {
		t.Logf("%s = %v", k, got[k])
		delete(got, k)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("claims differ from trustee's:\n got %v\nwant %v", got, want)
	}
	if c["tcb_status"] != "UpToDate" || c["tcb_date"] != "2023-02-15T00:00:00Z" {
		t.Fatalf("tcb claims: got %v %v", c["tcb_status"], c["tcb_date"])
	}
}

func TestTDXDebugRefused(t *testing.T) {
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	_, err := NewTDX(tdxConfig()).Verify(context.Background(), Evidence{Primary: tdxEvidence(quote), NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "DEBUG") {
		t.Fatalf("got %v, want a refusal of TD_ATTRIBUTES.DEBUG", err)
	}
}

func TestTDXRefusals(t *testing.T) {
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	rd := append([]byte(nil), quote[48+520:48+584]...)
	flip := func(b []byte, at int, mask byte) []byte {
		c := append([]byte(nil), b...)
		c[at] ^= mask
		return c
	}
	// A letter of the PCK certificate's PEM (case flipped: still base64).
	pck := bytes.Index(quote, []byte("-----BEGIN CERTIFICATE-----")) + 27 + 300
	for quote[pck] < 'A' || quote[pck] > 'z' || (quote[pck] > 'Z' && quote[pck] < 'a') {
		pck++
	}
	const sigAt = 48 + 584 + 4 // the quote signature opens the signed data
	later := Config{Now: atTime(time.Date(2023, 8, 1, 0, 0, 0, 0, time.UTC)), Collateral: "testdata", AllowDebug: true}
	tests := []struct {
		name  string
		quote []byte
		cfg   Config
		ev    Evidence
		want  error
		msg   string
	}{
		{"unchanged", quote, Config{}, Evidence{ReportData: rd}, nil, ""},
		{"mr_td bit", flip(quote, 48+136+3, 1), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "verify"},
		{"rtmr_3 bit", flip(quote, 48+472, 0x80), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "verify"},
		{"header bit", flip(quote, 30, 1), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "verify"},
		{"signature bit", flip(quote, sigAt+10, 1), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, "verify"},
		{"PCK certificate bit", flip(quote, pck, 0x20), Config{}, Evidence{ReportData: rd}, spec.ErrIntegrity, ""},
		{"other report data", quote, Config{}, Evidence{ReportData: flip(rd, 0, 1)}, spec.ErrIntegrity, "REPORTDATA"},
		{"no report data", quote, Config{}, Evidence{}, spec.ErrIntegrity, "no expected report data"},
		{"init-data not in MRCONFIGID", quote, Config{}, Evidence{ReportData: rd, InitData: &protocol.InitData{Format: "toml", Body: "version = \"0.1.0\"\n"}}, spec.ErrIntegrity, "MRCONFIGID"},
		{"collateral expired", quote, later, Evidence{ReportData: rd}, spec.ErrIntegrity, "expired"},
		{"no collateral", quote, Config{Now: atTime(tdxAt), AllowDebug: true}, Evidence{ReportData: rd}, spec.ErrIntegrity, "TCB info and QE identity"},
		{"empty collateral dir", quote, Config{Now: atTime(tdxAt), AllowDebug: true, Collateral: t.TempDir()}, Evidence{ReportData: rd}, spec.ErrIntegrity, "tcbinfo-50806f000000.json"},
		{"version 5", readTestdata(t, "tdx/trustee-tdx-quote-5.dat"), Config{}, Evidence{NoBinding: true}, spec.ErrUnsupported, "version 5"},
		{"SGX quote", append([]byte{3, 0}, quote[2:]...), Config{}, Evidence{NoBinding: true}, spec.ErrUnsupported, "SGX"},
		{"short", quote[:600], Config{}, Evidence{NoBinding: true}, spec.ErrUnsupported, ""},
		{"truncated signed data", quote[:1000], Config{}, Evidence{NoBinding: true}, spec.ErrUnsupported, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.Now == nil {
				cfg = tdxConfig()
				cfg.AllowDebug = true
			}
			_, err := NewTDX(cfg).Verify(context.Background(), Evidence{Primary: tdxEvidence(tt.quote), ReportData: tt.ev.ReportData, InitData: tt.ev.InitData, NoBinding: tt.ev.NoBinding})
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

// go-tdx-guest's recorded production quote has a TEE TCB SVN the recorded
// TCB info has no level for: the TCB cannot be placed, so it is refused.
func TestTDXNoMatchingTCBLevel(t *testing.T) {
	quote := readTestdata(t, "tdx/gotdxguest-quote-spr-e4.dat")
	_, err := NewTDX(tdxConfig()).Verify(context.Background(), Evidence{Primary: tdxEvidence(quote), NoBinding: true})
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "no matching TCB level") {
		t.Fatalf("got %v, want a TCB status refusal", err)
	}
}

// Revocation is checked when the CRLs are in the collateral directory; a
// directory with TCB info and QE identity only verifies without them.
func TestTDXCollateralWithoutCRLs(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"tcbinfo-50806f000000.json", "tcbinfo-50806f000000.issuer-chain.pem", "qe-identity.json", "qe-identity.issuer-chain.pem"} {
		b := readTestdata(t, "tdx/"+f)
		if err := os.MkdirAll(filepath.Join(dir, "tdx"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tdx", f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	v := tdxVerifier{Config{Now: atTime(tdxAt), Collateral: dir, AllowDebug: true}}
	if _, err := v.verifyQuote(context.Background(), quote, Evidence{NoBinding: true}); err != nil {
		t.Fatal(err)
	}
	_, crl, err := v.collateral("50806f000000", "platform")
	if err != nil || crl {
		t.Fatalf("got crl %v, %v; want no revocation check without CRLs", crl, err)
	}
	_, crl, err = tdxVerifier{tdxConfig()}.collateral("50806f000000", "platform")
	if err != nil || !crl {
		t.Fatalf("got crl %v, %v; want a revocation check with CRLs", crl, err)
	}
}

func TestTDXCollateralGetter(t *testing.T) {
	g := tdxCollateralGetter{dir: filepath.Join("testdata", "tdx")}
	h, b, err := g.Get(pcs.TcbInfoURL("50806F000000"))
	if err != nil || len(b) == 0 || len(h[pcs.TcbInfoIssuerChainPhrase]) != 1 {
		t.Fatalf("tcb info: %v %d %v", err, len(b), h)
	}
	if _, _, err := g.Get(pcs.PckCrlURL("processor")); err == nil {
		t.Fatal("a missing file with fetching disabled should fail")
	}
	if _, _, err := g.Get("https://example.com/other"); err == nil || !strings.Contains(err.Error(), "not enabled") {
		t.Fatalf("unknown URL: got %v", err)
	}
	if _, _, err := g.Get(pcs.TdxBaseURL + "/tcb?fmspc=../../x"); err == nil {
		t.Fatal("a path in the fmspc was accepted")
	}
}

func TestTDXMalformed(t *testing.T) {
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	b64 := base64.StdEncoding.EncodeToString(quote)
	tests := map[string][]byte{
		"too large":        append(tdxEvidence(quote), bytes.Repeat([]byte(" "), MaxEvidenceBytes)...),
		"not json":         []byte(`{"quote":`),
		"no quote":         []byte(`{"cc_eventlog":null}`),
		"quote not b64":    []byte(`{"quote":"!!!!"}`),
		"url-safe b64":     []byte(`{"quote":"` + strings.NewReplacer("+", "-", "/", "_").Replace(b64) + `"}`),
		"huge quote":       []byte(`{"quote":"` + strings.Repeat("A", 4*(MaxTDXQuoteBytes/3+8)) + `"}`),
		"eventlog not b64": []byte(`{"cc_eventlog":"!!","quote":"` + b64 + `"}`),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := NewTDX(tdxConfig()).Verify(context.Background(), Evidence{Primary: in, NoBinding: true})
			if !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("got %v, want %v", err, spec.ErrUnsupported)
			}
		})
	}
}

func FuzzTDXEvidence(f *testing.F) {
	f.Add([]byte(tdxEvidence(readTestdata(f, "tdx/trustee-tdx-quote-4.dat"))))
	f.Add([]byte(tdxEvidence(readTestdata(f, "tdx/gotdxguest-quote-spr-e4.dat"))))
	f.Add([]byte(`{"cc_eventlog":"AAAA","quote":"BAACAIEAAAA="}`))
	cfg := tdxConfig()
	cfg.AllowDebug = true
	v := NewTDX(cfg)
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		c, err := v.Verify(context.Background(), Evidence{Primary: in, NoBinding: true})
		if err == nil && c["quote"] == nil {
			t.Fatal("accepted evidence without quote claims")
		}
		if err != nil && !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
	})
}

func FuzzTDXQuote(f *testing.F) {
	f.Add(readTestdata(f, "tdx/trustee-tdx-quote-4.dat"))
	f.Add(readTestdata(f, "tdx/trustee-tdx-quote-5.dat"))
	cfg := tdxConfig()
	cfg.AllowDebug = true
	v := tdxVerifier{cfg}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		_, err := v.verifyQuote(context.Background(), in, Evidence{NoBinding: true})
		if err != nil && !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
	})
}
