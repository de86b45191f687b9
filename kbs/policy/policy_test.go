package policy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
)

func sampleClaims() map[string]any {
	return map[string]any{"svn": "1", "launch_digest": "abcde", "debug": false,
		"platform_version": map[string]any{"major": 1, "minor": 4}}
}

func TestDefaultAttestationPolicy(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := e.Appraise(ctx, "sample", sampleClaims())
	tv, id := ap.Vector, ap.PolicyID
	if err != nil {
		t.Fatal(err)
	}
	if got := tv.Status(); got != token.StatusContraindicated || id != "default_cpu" {
		t.Fatalf("without reference values: got %s %+v (%s), want contraindicated", got, tv, id)
	}
	if err := e.ApplyRVPS(ctx, protocol.NewRVPSMessage("launch_digest", []string{"abcde"})); err != nil {
		t.Fatal(err)
	}
	if err := e.ApplyRVPS(ctx, protocol.NewRVPSMessage("svn", []string{"1"})); err != nil {
		t.Fatal(err)
	}
	ap, _ = e.Appraise(ctx, "sample", sampleClaims())
	tv = ap.Vector
	if got := tv.Status(); got != token.StatusAffirming {
		t.Fatalf("with matching reference values: got %s %+v, want affirming", got, tv)
	}
	if want := (token.TrustVector{Executables: 3, Hardware: 2, Configuration: 2}); tv != want {
		t.Fatalf("vector: got %+v, want %+v", tv, want)
	}
	if err := e.SetReferenceValue(ctx, "launch_digest", []any{"other"}); err != nil {
		t.Fatal(err)
	}
	ap, _ = e.Appraise(ctx, "sample", sampleClaims())
	tv = ap.Vector
	if got := tv.Status(); got != token.StatusWarning {
		t.Fatalf("mismatching launch digest: got %s %+v, want warning", got, tv)
	}
	if got := e.ReferenceValues()["svn"]; len(got) != 1 || got[0] != "1" {
		t.Fatalf("ReferenceValues: got %v", got)
	}
}

func tokenClaims(status string) map[string]any {
	return map[string]any{"submods": map[string]any{"cpu0": map[string]any{"ear.status": status}}}
}

func TestResourcePolicies(t *testing.T) {
	ctx := context.Background()
	e, _ := New(ctx)
	p := protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "nginx"}
	aff, _ := NewInput(tokenClaims("affirming"))
	warn, _ := NewInput(tokenClaims("warning"))
	pathPolicy := `package policy
import rego.v1
default allow := false
allow if {
	data.plugin == "resource"
	data["resource-path"] == ["default", "image_key", "nginx"]
	data.query.v == "1"
	input.submods.cpu0["ear.status"] != "contraindicated"
}`
	v0Policy := "package policy\ndefault allow = false\nallow { input.submods.cpu0[\"ear.status\"] == \"warning\" }\n"
	tests := []struct {
		name   string
		policy string
		in     *Input
		query  map[string][]string
		want   bool
	}{
		{"default affirming", "", aff, nil, true},
		{"default warning", "", warn, nil, false},
		{"allow-all", ResourceAllowAll, warn, nil, true},
		{"deny-all", ResourceDenyAll, aff, nil, false},
		{"path+query", pathPolicy, warn, map[string][]string{"v": {"1"}}, true},
		{"path, wrong query", pathPolicy, warn, map[string][]string{"v": {"2"}}, false},
		{"rego v0", v0Policy, warn, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.policy != "" {
				if err := e.SetResourcePolicy(ctx, tt.policy); err != nil {
					t.Fatal(err)
				}
			}
			got, err := e.Allow(ctx, tt.in, p, tt.query)
			if err != nil || got != tt.want {
				t.Fatalf("Allow: got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestCompileErrorKeepsPolicy(t *testing.T) {
	ctx := context.Background()
	e, _ := New(ctx)
	if err := e.SetResourcePolicy(ctx, ResourceAllowAll); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"package policy\nallow if {", "package other\ndefault allow := true", "not rego", "package policy\nallow if undefined_fn(1)"} {
		err := e.SetResourcePolicy(ctx, bad)
		if !errors.Is(err, ErrCompile) {
			t.Errorf("%q: got %v, want ErrCompile", bad, err)
		}
		if err := e.SetAttestationPolicy(ctx, "x", bad); !errors.Is(err, ErrCompile) {
			t.Errorf("attestation %q: got %v, want ErrCompile", bad, err)
		}
	}
	err := e.SetResourcePolicy(ctx, "package policy\nallow if {")
	if err == nil || !strings.Contains(err.Error(), "policy.rego:") {
		t.Errorf("compiler message missing: %v", err)
	}
	if got := e.ResourcePolicy(); got != ResourceAllowAll {
		t.Fatalf("running policy changed: got %q", got)
	}
	if id, src := e.AttestationPolicy(); id != "default_cpu" || src != DefaultAttestation {
		t.Fatalf("attestation policy changed: got %s", id)
	}
}

func TestRVPSScalar(t *testing.T) {
	e, _ := New(context.Background())
	msg := `{"version":"0.1.0","type":"sample","payload":"` + base64.StdEncoding.EncodeToString([]byte(`{"svn":"1","n":2}`)) + `"}`
	if err := e.ApplyRVPS(context.Background(), []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.ReferenceValues()); got != "map[n:[2] svn:[1]]" {
		t.Fatalf("got %s", got)
	}
}

func TestRVPSRejects(t *testing.T) {
	e, _ := New(context.Background())
	for _, bad := range []string{`{`, `{"version":"0.2.0","type":"sample","payload":""}`, `{"version":"0.1.0","type":"sample","payload":"!!"}`, `{"version":"0.1.0","type":"sample","payload":"WzFd"}`} {
		if err := e.ApplyRVPS(context.Background(), []byte(bad)); err == nil {
			t.Errorf("%s: got nil error", bad)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	ctx := context.Background()
	e, _ := New(ctx)
	in, _ := NewInput(tokenClaims("affirming"))
	p := protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "nginx"}
	for b.Loop() {
		if ok, err := e.Allow(ctx, in, p, nil); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkAppraise(b *testing.B) {
	ctx := context.Background()
	e, _ := New(ctx)
	for b.Loop() {
		if _, err := e.Appraise(ctx, "sample", sampleClaims()); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzApplyRVPS(f *testing.F) {
	f.Add(protocol.NewRVPSMessage("svn", []string{"1"}))
	f.Add([]byte(`{"version":"0.1.0","type":"sample","payload":"e30="}`))
	e, _ := New(context.Background())
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if err := e.ApplyRVPS(context.Background(), in); err != nil {
			return
		}
		// Accepted: a sample 0.1.0 message whose payload's names are now stored.
		var m protocol.RVPSMessage
		if json.Unmarshal(in, &m) != nil || m.Version != "0.1.0" || m.Type != "sample" {
			t.Fatalf("accepted a message that is not sample 0.1.0: %q", in)
		}
		payload, _ := base64.StdEncoding.DecodeString(m.Payload)
		var values map[string]any
		_ = json.Unmarshal(payload, &values)
		got := e.ReferenceValues()
		for name := range values {
			if _, ok := got[name]; !ok && name != "" {
				t.Fatalf("accepted reference value %q is not stored", name)
			}
		}
	})
}

func TestDecisionCache(t *testing.T) {
	ctx := context.Background()
	e, _ := New(ctx)
	in, _ := NewInput(tokenClaims("affirming"))
	p := protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "nginx"}
	if ok, _ := e.Allow(ctx, in, p, nil); !ok {
		t.Fatal("affirming denied")
	}
	// A policy change invalidates remembered decisions.
	if err := e.SetResourcePolicy(ctx, ResourceDenyAll); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Allow(ctx, in, p, nil); ok {
		t.Fatal("stale cached decision after the policy changed")
	}
	// Nondeterministic policies are never cached: this one flips with time.
	flip := "package policy\ndefault allow := false\nallow if time.now_ns() < 0\n"
	if err := e.SetResourcePolicy(ctx, flip); err != nil {
		t.Fatal(err)
	}
	if e.resDet {
		t.Fatal("time.now_ns policy considered deterministic")
	}
	e.SetResourcePolicy(ctx, ResourceAllowAll)
	if !e.resDet {
		t.Fatal("allow-all considered nondeterministic")
	}
}

func TestTrusteeStyleAttestationPolicy(t *testing.T) {
	ctx := context.Background()
	e, _ := New(ctx)
	// The shape of trustee's ear_default_policy_cpu.rego for the sample TEE.
	src := `package policy
import rego.v1
default executables := 33
default hardware := 97
default configuration := 36
executables := 3 if {
	input.sample
	input.sample.launch_digest in query_reference_value("launch_digest")
}
hardware := 2 if {
	input.sample
	input.sample.svn in query_reference_value("svn")
	count(query_reference_value("nothing")) == 0
}
configuration := 2 if {
	input.sample
	input.sample.debug == false
}`
	if err := e.SetAttestationPolicy(ctx, "trustee", src); err != nil {
		t.Fatal(err)
	}
	ap, _ := e.Appraise(ctx, "sample", sampleClaims())
	tv := ap.Vector
	if tv.Status() != token.StatusContraindicated {
		t.Fatalf("no reference values: %+v", tv)
	}
	e.SetReferenceValue(ctx, "launch_digest", []any{"abcde"})
	e.SetReferenceValue(ctx, "svn", []any{"1"})
	ap, _ = e.Appraise(ctx, "sample", sampleClaims())
	tv = ap.Vector
	if want := (token.TrustVector{Executables: 3, Hardware: 2, Configuration: 2}); tv != want {
		t.Fatalf("vector: got %+v, want %+v", tv, want)
	}
}

func TestConcurrentReferenceValues(t *testing.T) {
	ctx := context.Background()
	e, _ := New(ctx)
	src := "package policy\nhardware := 2 if \"1\" in query_reference_value(\"svn\")\nexecutables := 3 if \"abcde\" in data.reference.launch_digest\n"
	if err := e.SetAttestationPolicy(ctx, "x", src); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			_ = e.SetReferenceValue(ctx, "svn", []any{fmt.Sprint(i % 3)})
		}
	}()
	for range 200 {
		if _, err := e.Appraise(ctx, "sample", sampleClaims()); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

// An attested client asking for many long paths cannot grow its token's
// decision cache past MaxDecisionCacheBytes, and decisions still come out right.
func TestDecisionCacheBytes(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetResourcePolicy(ctx, ResourceAllowAll); err != nil {
		t.Fatal(err)
	}
	in, err := NewInput(map[string]any{"submods": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 250)
	for i := range 1000 {
		p := protocol.ResourcePath{Repo: long, Type: long, Tag: fmt.Sprintf("%s%d", long[:240], i)}
		if ok, err := e.Allow(ctx, in, p, nil); err != nil || !ok {
			t.Fatalf("Allow %d: %v %v", i, ok, err)
		}
	}
	if in.keyBytes > MaxDecisionCacheBytes || len(in.decisions) == 0 {
		t.Fatalf("decision cache holds %d bytes in %d entries, limit %d", in.keyBytes, len(in.decisions), MaxDecisionCacheBytes)
	}
}

func tpmClaims(ak, pcr07 string) map[string]any {
	c := map[string]any{"ak_public": ak}
	for i := range 24 {
		c[fmt.Sprintf("pcr%02d", i)] = strings.Repeat("0", 64)
	}
	c["pcr07"] = pcr07
	return c
}

// The default policy's TPM rules: an unknown AK is never affirming; every
// pinned PCR must match; each shortfall is explained.
func TestDefaultPolicyTPM(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Repeat("a", 64)
	tests := []struct {
		name    string
		refs    map[string][]any
		claims  map[string]any
		status  string
		reasons []string
	}{
		{"unknown AK", map[string][]any{"tpm_pcr07": {good}}, tpmClaims("AK1", good), token.StatusContraindicated,
			[]string{"hardware: the TPM attestation key (ak_public) is not registered"}},
		{"no PCR pinned", map[string][]any{"tpm_ak_public": {"AK1"}}, tpmClaims("AK1", good), token.StatusWarning,
			[]string{"executables: no tpm_pcrNN reference value is set"}},
		{"pinned PCR differs", map[string][]any{"tpm_ak_public": {"AK1"}, "tpm_pcr07": {good}}, tpmClaims("AK1", strings.Repeat("b", 64)), token.StatusWarning,
			[]string{"executables: pcr07 = bbbb", "does not match reference value tpm_pcr07"}},
		{"affirming", map[string][]any{"tpm_ak_public": {"AK1"}, "tpm_pcr07": {good}}, tpmClaims("AK1", good), token.StatusAffirming, nil},
		{"trustee's trusted_aks", map[string][]any{"trusted_aks": {"AK1"}, "tpm_pcr07": {good}}, tpmClaims("AK1", good), token.StatusAffirming, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, n := range []string{"tpm_ak_public", "trusted_aks", "tpm_pcr07"} {
				_ = e.SetReferenceValue(ctx, n, tt.refs[n])
			}
			ap, err := e.Appraise(ctx, "tpm", tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			if got := ap.Vector.Status(); got != tt.status {
				t.Fatalf("status %s, want %s (vector %+v, reasons %q)", got, tt.status, ap.Vector, ap.Reasons)
			}
			joined := strings.Join(ap.Reasons, "\n")
			for _, want := range tt.reasons {
				if !strings.Contains(joined, want) {
					t.Errorf("reasons %q lack %q", ap.Reasons, want)
				}
			}
			if tt.status == token.StatusAffirming && len(ap.Reasons) != 0 {
				t.Errorf("affirming with reasons %q", ap.Reasons)
			}
		})
	}
}

// SNP and TDX claims against trustee-named reference values.
func TestDefaultPolicySNPAndTDX(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snp := map[string]any{"measurement": "m1", "reported_tcb_bootloader": 3, "reported_tcb_microcode": 209,
		"reported_tcb_snp": 20, "reported_tcb_tee": 0, "policy_debug_allowed": false, "policy_migrate_ma": false}
	ap, _ := e.Appraise(ctx, "snp", snp)
	if ap.Vector.Status() == token.StatusAffirming || !strings.Contains(strings.Join(ap.Reasons, "\n"), "snp measurement m1 is not among reference values snp_launch_measurement") {
		t.Fatalf("snp without reference values: %s %q", ap.Vector.Status(), ap.Reasons)
	}
	for n, v := range map[string][]any{"snp_launch_measurement": {"m1"}, "snp_bootloader": {"3"}, "snp_microcode": {"209"}, "snp_snp_svn": {"20"}, "snp_tee_svn": {"0"}} { // as set-reference-value sends them: text
		_ = e.SetReferenceValue(ctx, n, v)
	}
	if ap, _ = e.Appraise(ctx, "snp", snp); ap.Vector.Status() != token.StatusAffirming {
		t.Fatalf("snp with matching reference values: %s %q", ap.Vector.Status(), ap.Reasons)
	}
	snp["policy_debug_allowed"] = true
	if ap, _ = e.Appraise(ctx, "snp", snp); ap.Vector.Status() == token.StatusAffirming || !strings.Contains(strings.Join(ap.Reasons, "\n"), "debugging") {
		t.Fatalf("debug snp guest: %s %q", ap.Vector.Status(), ap.Reasons)
	}

	tdx := map[string]any{"quote": map[string]any{"body": map[string]any{"mr_td": "td", "rtmr_1": "r1", "rtmr_2": "r2", "xfam": "e7"}},
		"tcb_status": "UpToDate", "td_attributes": map[string]any{"debug": false}}
	for n, v := range map[string][]any{"mr_td": {"td"}, "rtmr_1": {"r1"}, "rtmr_2": {"other"}} {
		_ = e.SetReferenceValue(ctx, n, v)
	}
	ap, _ = e.Appraise(ctx, "tdx", tdx)
	if ap.Vector.Status() == token.StatusAffirming || !strings.Contains(strings.Join(ap.Reasons, "\n"), "executables: tdx rtmr_2 r2 is not among reference values rtmr_2") {
		t.Fatalf("tdx with an rtmr_2 mismatch: %s %q", ap.Vector.Status(), ap.Reasons)
	}
	_ = e.SetReferenceValue(ctx, "rtmr_2", []any{"r2"})
	if ap, _ = e.Appraise(ctx, "tdx", tdx); ap.Vector.Status() != token.StatusAffirming {
		t.Fatalf("tdx with matching reference values: %s %q", ap.Vector.Status(), ap.Reasons)
	}
}
