// Package policy evaluates the broker's OPA Rego policies: the attestation
// policy, which turns verified TEE claims and reference values into an EAR
// trust vector, and the resource policy (`package policy`, boolean `allow`),
// which decides whether an attestation token may receive a resource.
//
// Every policy is compiled and its query prepared once, when it is set; a
// policy that does not compile is rejected with the compiler's message and
// the running policy stays in force. Policies are written in Rego v1; a
// policy that only parses as Rego v0 (as many trustee examples are) is
// accepted as v0.
package policy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

// Built-in resource policies.
const (
	// ResourceAffirming releases resources only to tokens whose EAR status is
	// "affirming". It is the default.
	ResourceAffirming = `package policy

default allow := false

allow if input.submods.cpu0["ear.status"] == "affirming"
`
	// ResourceAllowAll releases every resource to any valid token.
	ResourceAllowAll = "package policy\n\ndefault allow := true\n"
	// ResourceDenyAll releases nothing.
	ResourceDenyAll = "package policy\n\ndefault allow := false\n"
)

// DefaultAttestation is the default attestation policy (id "default_cpu"),
// after trustee's default EAR policy, stricter where trustee trusts by
// default. Its input is {"<tee>": claims}; data.reference holds the
// reference values (also reachable with trustee's query_reference_value).
// Each TEE's trust vector:
//
//   - tpm: hardware affirming only when ak_public is a registered AK
//     (reference values tpm_ak_public, or trustee's trusted_aks) or the
//     evidence's EK chains to a --tpm-ek-ca and its AK activated the
//     broker's credential (ek_verified): an unknown AK is contraindicated.
//     executables affirming when at least one tpm_pcrNN reference value is
//     set and every one set matches pcrNN, and every tpm_boot_init_data,
//     tpm_boot_cmdline, tpm_boot_init set matches the replayed boot event
//     (PCR 8, 9, 10; coffer vm guests).
//   - snp: executables from snp_launch_measurement; hardware from
//     snp_bootloader, snp_microcode, snp_snp_svn, snp_tee_svn; configuration
//     from the debug and migration policy bits.
//   - tdx: executables from rtmr_1 and rtmr_2 (and mr_td for hardware, with
//     tcb_status UpToDate); configuration from td_attributes.debug (and xfam
//     when reference values are set).
//   - sample: launch_digest and svn among the reference values, debug off.
//
// reasons is a set of one-line explanations, each naming the trust vector
// and the claim or reference value that kept it from affirming; the broker
// reports them with every denial (never key material: claims are
// measurements).
const DefaultAttestation = `package policy

default executables := 33

default hardware := 97

default configuration := 36

# Reference values are compared as text, so "3" set from the command line
# matches a claim of 3.
same_as_any(v, refs) if {
	some r in refs
	sprintf("%v", [r]) == sprintf("%v", [v])
}

ref_has(name, v) if same_as_any(v, query_reference_value(name))

# ---- tpm

tpm_ak_known if ref_has("tpm_ak_public", input.tpm.ak_public)

tpm_ak_known if ref_has("trusted_aks", input.tpm.ak_public)

# an EK certified by a --tpm-ek-ca, with the AK's credential activated
tpm_ak_known if input.tpm.ek_verified == true

# measured boot of coffer vm guests (claim boot): each reference value set
# pins one replayed event (claim key: reference name, what it is)
tpm_boot_refs := {
	"init_data": ["tpm_boot_init_data", "PCR 8: init-data digest"],
	"cmdline_digest": ["tpm_boot_cmdline", "PCR 9: kernel command line digest"],
	"init": ["tpm_boot_init", "PCR 10: /init (IMA) digest"],
}

tpm_boot_mismatch contains k if {
	input.tpm
	some k, r in tpm_boot_refs
	count(query_reference_value(r[0])) > 0
	not same_as_any(object.get(object.get(input.tpm, "boot", {}), k, "(absent)"), query_reference_value(r[0]))
}

# reference values tpm_pcrNN (an empty list unpins), by claim name pcrNN
tpm_pcr_refs[substring(name, 4, -1)] := vals if {
	input.tpm # the query evaluates every rule: skip the walk for other TEEs
	some name, vals in data.reference
	startswith(name, "tpm_pcr")
	count(vals) > 0
}

tpm_pcr_mismatch contains k if {
	some k, vals in tpm_pcr_refs
	not same_as_any(object.get(input.tpm, k, null), vals)
}

hardware := 2 if {
	input.tpm
	tpm_ak_known
}

executables := 3 if {
	input.tpm
	count(tpm_pcr_refs) > 0
	count(tpm_pcr_mismatch) == 0
	count(tpm_boot_mismatch) == 0
}

configuration := 0 if input.tpm

reasons contains "hardware: the TPM attestation key (ak_public) is not registered: add it as reference value tpm_ak_public" if {
	input.tpm
	not tpm_ak_known
}

reasons contains sprintf("executables: %s = %v does not match reference value tpm_%s", [k, object.get(input.tpm, k, "(absent)"), k]) if {
	some k in tpm_pcr_mismatch
}

reasons contains sprintf("executables: %s %v is not among reference values %s", [r[1], v, r[0]]) if {
	some k in tpm_boot_mismatch
	r := tpm_boot_refs[k]
	v := object.get(object.get(input.tpm, "boot", {}), k, "(absent: the evidence has no measured-boot logs)")
}

reasons contains "executables: no tpm_pcrNN reference value is set, so no PCR is checked" if {
	input.tpm
	count(tpm_pcr_refs) == 0
}

# ---- snp

executables := 3 if ref_has("snp_launch_measurement", input.snp.measurement)

hardware := 2 if {
	ref_has("snp_bootloader", input.snp.reported_tcb_bootloader)
	ref_has("snp_microcode", input.snp.reported_tcb_microcode)
	ref_has("snp_snp_svn", input.snp.reported_tcb_snp)
	ref_has("snp_tee_svn", input.snp.reported_tcb_tee)
}

configuration := 2 if {
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

reasons contains sprintf("executables: snp measurement %v is not among reference values snp_launch_measurement", [input.snp.measurement]) if {
	input.snp
	not ref_has("snp_launch_measurement", input.snp.measurement)
}

reasons contains sprintf("hardware: snp %s %v is not among reference values %s", [claim, object.get(input.snp, claim, "(absent)"), ref]) if {
	input.snp
	some claim, ref in {"reported_tcb_bootloader": "snp_bootloader", "reported_tcb_microcode": "snp_microcode", "reported_tcb_snp": "snp_snp_svn", "reported_tcb_tee": "snp_tee_svn"}
	not ref_has(ref, object.get(input.snp, claim, null))
}

reasons contains "configuration: snp guest policy allows debugging or migration agents" if {
	input.snp
	not configuration == 2
}

# ---- tdx

executables := 3 if {
	ref_has("rtmr_1", input.tdx.quote.body.rtmr_1)
	ref_has("rtmr_2", input.tdx.quote.body.rtmr_2)
}

hardware := 2 if {
	ref_has("mr_td", input.tdx.quote.body.mr_td)
	input.tdx.tcb_status == "UpToDate"
}

configuration := 2 if {
	input.tdx.td_attributes.debug == false
	tdx_xfam_ok
}

tdx_xfam_ok if {
	input.tdx
	count(query_reference_value("xfam")) == 0
}

tdx_xfam_ok if ref_has("xfam", input.tdx.quote.body.xfam)

reasons contains sprintf("%s: tdx %s %v is not among reference values %s", [vec, claim, object.get(input.tdx.quote.body, claim, "(absent)"), claim]) if {
	input.tdx
	some claim, vec in {"rtmr_1": "executables", "rtmr_2": "executables", "mr_td": "hardware"}
	not ref_has(claim, object.get(input.tdx.quote.body, claim, null))
}

reasons contains sprintf("hardware: tdx tcb_status is %v, not UpToDate", [object.get(input.tdx, "tcb_status", "(absent)")]) if {
	input.tdx
	not input.tdx.tcb_status == "UpToDate"
}

reasons contains "configuration: tdx td_attributes.debug is set, or xfam is not among reference values xfam" if {
	input.tdx
	not configuration == 2
}

# ---- sample (no root of trust: only on brokers started with --allow-sample-tee)

executables := 3 if ref_has("launch_digest", input.sample.launch_digest)

hardware := 2 if ref_has("svn", input.sample.svn)

configuration := 2 if input.sample.debug == false

reasons contains sprintf("executables: sample launch_digest %v is not among reference values launch_digest", [input.sample.launch_digest]) if {
	input.sample
	not ref_has("launch_digest", input.sample.launch_digest)
}

reasons contains sprintf("hardware: sample svn %v is not among reference values svn", [input.sample.svn]) if {
	input.sample
	not ref_has("svn", input.sample.svn)
}
`

// ErrCompile marks a policy that failed to parse or compile.
var ErrCompile = errors.New("policy does not compile")

// Engine holds the current policies and reference values. Safe for concurrent use.
type Engine struct {
	refs  storage.Store // data.reference
	refMu sync.Mutex    // serializes reference value writers

	mu        sync.RWMutex
	resSrc    string
	res       rego.PreparedEvalQuery
	resGen    uint64 // bumped on every resource policy change
	resDet    bool   // decisions of the resource policy may be cached
	attID     string
	attSrc    string
	att       rego.PreparedEvalQuery
	refValues map[string][]any
}

// New returns an Engine with ResourceAffirming and DefaultAttestation.
func New(ctx context.Context) (*Engine, error) {
	e := &Engine{refs: inmem.NewFromObject(map[string]any{"reference": map[string]any{}}), refValues: map[string][]any{}}
	if err := e.SetResourcePolicy(ctx, ResourceAffirming); err != nil {
		return nil, err
	}
	if err := e.SetAttestationPolicy(ctx, token.DefaultAppraisalPolicy, DefaultAttestation); err != nil {
		return nil, err
	}
	return e, nil
}

// prepare compiles src (v1, falling back to v0) with query q. It also
// reports whether the policy is deterministic (calls no builtin OPA marks
// nondeterministic, such as time.now_ns or http.send), so that its
// decisions may be cached.
func prepare(ctx context.Context, src, q string, opts ...func(*rego.Rego)) (rego.PreparedEvalQuery, bool, error) {
	try := func(v ast.RegoVersion) (rego.PreparedEvalQuery, bool, error) {
		mod, err := ast.ParseModuleWithOpts("policy.rego", src, ast.ParserOptions{RegoVersion: v})
		if err != nil {
			return rego.PreparedEvalQuery{}, false, err
		}
		if mod.Package.Path.String() != "data.policy" {
			return rego.PreparedEvalQuery{}, false, fmt.Errorf("package is %s, want policy", mod.Package.Path)
		}
		all := append([]func(*rego.Rego){rego.Query(q), rego.ParsedModule(mod), rego.SetRegoVersion(v), rego.StrictBuiltinErrors(false)}, opts...)
		pq, err := rego.New(all...).PrepareForEval(ctx)
		return pq, err == nil && deterministic(mod), err
	}
	pq, det, err := try(ast.RegoV1)
	if err == nil {
		return pq, det, nil
	}
	if pq0, det0, err0 := try(ast.RegoV0); err0 == nil {
		return pq0, det0, nil
	}
	return rego.PreparedEvalQuery{}, false, fmt.Errorf("%w: %v", ErrCompile, err)
}

// deterministic reports whether mod refers to no nondeterministic builtin.
func deterministic(mod *ast.Module) bool {
	det := true
	ast.WalkRefs(mod, func(r ast.Ref) bool {
		if b, ok := ast.BuiltinMap[r.String()]; ok && b.Nondeterministic {
			det = false
		}
		return !det
	})
	return det
}

const resourceQuery = `allow = data.policy.allow with input as input.claims with data.plugin as input.d.plugin with data["resource-path"] as input.d.path with data.query as input.d.query`

// SetResourcePolicy compiles and installs a resource policy. On error (wrapping ErrCompile) the previous policy stays.
func (e *Engine) SetResourcePolicy(ctx context.Context, src string) error {
	pq, det, err := prepare(ctx, src, resourceQuery)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.res, e.resSrc, e.resDet = pq, src, det
	e.resGen++
	e.mu.Unlock()
	return nil
}

// ResourcePolicy returns the source of the current resource policy.
func (e *Engine) ResourcePolicy() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.resSrc
}

// Input is a resource policy input: the verified token claims as JSON. It
// remembers the decisions of a deterministic resource policy for requests
// without query parameters, until the policy changes; only a miss converts
// the claims for OPA, and the converted form is not kept, so an Input costs
// little more than its JSON.
type Input struct {
	raw []byte

	mu        sync.Mutex
	gen       uint64
	decisions map[protocol.ResourcePath]bool
	keyBytes  int // path bytes held by decisions
}

// MaxDecisionCacheBytes bounds the resource paths (map overhead included,
// about 64 bytes a decision) an Input remembers decisions for, so that what
// an attested client can make the broker keep per token has a known bound.
const MaxDecisionCacheBytes = 4 << 10

const decisionOverhead = 64

// NewInput prepares token claims for Allow.
func NewInput(claims map[string]any) (*Input, error) {
	raw, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("policy input: %w", err)
	}
	return &Input{raw: raw}, nil
}

// NewInputJSON prepares token claims given as a JSON object for Allow.
func NewInputJSON(raw []byte) (*Input, error) {
	if !json.Valid(raw) {
		return nil, fmt.Errorf("policy input: invalid JSON: %w", spec.ErrUnsupported)
	}
	return &Input{raw: raw}, nil
}

func (in *Input) cached(gen uint64, p protocol.ResourcePath) (allow, ok bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.gen != gen {
		return false, false
	}
	allow, ok = in.decisions[p]
	return allow, ok
}

func (in *Input) remember(gen uint64, p protocol.ResourcePath, allow bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.gen != gen || in.decisions == nil {
		in.gen, in.decisions, in.keyBytes = gen, map[protocol.ResourcePath]bool{}, 0
	}
	n := len(p.Repo) + len(p.Type) + len(p.Tag) + decisionOverhead
	if _, ok := in.decisions[p]; !ok && in.keyBytes+n <= MaxDecisionCacheBytes {
		in.decisions[p] = allow
		in.keyBytes += n
	}
}

// Allow evaluates the resource policy for a request of path by the holder
// of in. data.plugin is "resource", data["resource-path"] the path segments
// and data.query the URL query parameters. An undefined or non-boolean allow is a denial.
func (e *Engine) Allow(ctx context.Context, in *Input, p protocol.ResourcePath, query map[string][]string) (bool, error) {
	e.mu.RLock()
	pq, gen, det := e.res, e.resGen, e.resDet
	e.mu.RUnlock()
	cacheable := det && len(query) == 0
	if cacheable {
		if allow, ok := in.cached(gen, p); ok {
			return allow, nil
		}
	}
	q := ast.NewObject()
	for k, vs := range query {
		if len(vs) > 0 {
			q.Insert(ast.StringTerm(k), ast.StringTerm(vs[0]))
		}
	}
	d := ast.NewObject(
		ast.Item(ast.StringTerm("plugin"), ast.StringTerm("resource")),
		ast.Item(ast.StringTerm("path"), ast.ArrayTerm(ast.StringTerm(p.Repo), ast.StringTerm(p.Type), ast.StringTerm(p.Tag))),
		ast.Item(ast.StringTerm("query"), ast.NewTerm(q)),
	)
	claims, err := ast.ValueFromReader(bytes.NewReader(in.raw))
	if err != nil {
		return false, fmt.Errorf("policy input: %w", err)
	}
	input := ast.NewObject(ast.Item(ast.StringTerm("claims"), ast.NewTerm(claims)), ast.Item(ast.StringTerm("d"), ast.NewTerm(d)))
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return false, fmt.Errorf("evaluating resource policy: %w", err)
	}
	allow := false
	if len(rs) == 1 {
		b, ok := rs[0].Bindings["allow"].(bool)
		allow = ok && b
	}
	if cacheable {
		in.remember(gen, p, allow)
	}
	return allow, nil
}

// SetAttestationPolicy compiles and installs the attestation policy with
// its id (reported as ear.appraisal-policy-id). The previous policy stays on error.
func (e *Engine) SetAttestationPolicy(ctx context.Context, id, src string) error {
	if id == "" {
		id = token.DefaultAppraisalPolicy
	}
	pq, _, err := prepare(ctx, src, "result = data.policy", rego.Store(e.refs), e.queryReferenceValue())
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.att, e.attSrc, e.attID = pq, src, id
	e.mu.Unlock()
	return nil
}

// queryReferenceValue provides trustee's builtin query_reference_value(name)
// (the list of reference values called name, [] when none), so attestation
// policies written for trustee run unchanged.
func (e *Engine) queryReferenceValue() func(*rego.Rego) {
	return rego.Function1(&rego.Function{
		Name: "query_reference_value",
		Decl: types.NewFunction(types.Args(types.S), types.NewArray(nil, types.A)),
	}, func(_ rego.BuiltinContext, name *ast.Term) (*ast.Term, error) {
		n, ok := name.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("query_reference_value: name must be a string")
		}
		e.mu.RLock()
		vs := e.refValues[string(n)]
		e.mu.RUnlock()
		if vs == nil {
			vs = []any{}
		}
		v, err := ast.InterfaceToValue(vs)
		if err != nil {
			return nil, err
		}
		return ast.NewTerm(v), nil
	})
}

// AttestationPolicy returns the id and source of the attestation policy.
func (e *Engine) AttestationPolicy() (id, src string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.attID, e.attSrc
}

// Appraisal is the attestation policy's verdict on one TEE's claims.
type Appraisal struct {
	Vector   token.TrustVector
	PolicyID string
	// Reasons are the policy's one-line explanations (its "reasons" set) of
	// what kept a trust vector claim from affirming, sorted, at most
	// MaxReasons of at most MaxReasonLen bytes each.
	Reasons []string
}

// Bounds on the reasons kept from a policy, which end up in tokens.
const (
	MaxReasons   = 8
	MaxReasonLen = 256
)

// Appraise runs the attestation policy over one TEE's verified claims and
// returns the trust vector (from the policy's rules instance_identity,
// configuration, executables, file_system, hardware, runtime_opaque,
// storage_opaque, sourced_data; absent ones are 0), the policy id, and the
// policy's reasons.
func (e *Engine) Appraise(ctx context.Context, tee protocol.Tee, claims map[string]any) (Appraisal, error) {
	e.mu.RLock()
	pq, id := e.att, e.attID
	e.mu.RUnlock()
	a := Appraisal{PolicyID: id}
	rs, err := pq.Eval(ctx, rego.EvalInput(map[string]any{string(tee): claims}))
	if err != nil {
		return a, fmt.Errorf("evaluating attestation policy: %w", err)
	}
	if len(rs) != 1 {
		return a, nil
	}
	out, _ := rs[0].Bindings["result"].(map[string]any)
	get := func(name string) int {
		switch n := out[name].(type) {
		case json.Number:
			i, _ := n.Int64()
			return int(i)
		case float64:
			return int(n)
		case int:
			return n
		}
		return 0
	}
	a.Vector = token.TrustVector{
		InstanceIdentity: get("instance_identity"), Configuration: get("configuration"),
		Executables: get("executables"), FileSystem: get("file_system"), Hardware: get("hardware"),
		RuntimeOpaque: get("runtime_opaque"), StorageOpaque: get("storage_opaque"), SourcedData: get("sourced_data"),
	}
	if rs, ok := out["reasons"].([]any); ok {
		for _, r := range rs {
			if s, ok := r.(string); ok && len(a.Reasons) < MaxReasons {
				if len(s) > MaxReasonLen {
					s = s[:MaxReasonLen]
				}
				a.Reasons = append(a.Reasons, s)
			}
		}
		slices.Sort(a.Reasons)
	}
	return a, nil
}

// SetReferenceValue replaces the reference values called name.
func (e *Engine) SetReferenceValue(ctx context.Context, name string, values []any) error {
	if name == "" {
		return fmt.Errorf("reference value without a name: %w", spec.ErrUnsupported)
	}
	if values == nil {
		values = []any{}
	}
	// refMu orders writers; e.mu is held only briefly, never across the store
	// write (an evaluation holding a store read transaction may call
	// query_reference_value, which takes e.mu).
	e.refMu.Lock()
	defer e.refMu.Unlock()
	e.mu.Lock()
	e.refValues[name] = values
	all := make(map[string]any, len(e.refValues))
	for k, v := range e.refValues {
		all[k] = v
	}
	e.mu.Unlock()
	return storage.WriteOne(ctx, e.refs, storage.ReplaceOp, storage.MustParsePath("/reference"), all)
}

// ReferenceValues returns a copy of the stored reference values.
func (e *Engine) ReferenceValues() map[string][]any {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make(map[string][]any, len(e.refValues))
	for k, v := range e.refValues {
		out[k] = append([]any(nil), v...)
	}
	return out
}

// ApplyRVPS stores the reference values of an RVPS message (ParseRVPS).
func (e *Engine) ApplyRVPS(ctx context.Context, raw []byte) error {
	values, err := ParseRVPS(raw)
	if err != nil {
		return err
	}
	for name, vs := range values {
		if err := e.SetReferenceValue(ctx, name, vs); err != nil {
			return err
		}
	}
	return nil
}

// ParseRVPS returns the reference values of an RVPS message
// {"version":"0.1.0","type":"sample","payload":"<std b64 of {\"name\":[values]}>"};
// a single value instead of a list is taken as a list of one.
func ParseRVPS(raw []byte) (map[string][]any, error) {
	var m protocol.RVPSMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("rvps message: %v: %w", err, spec.ErrUnsupported)
	}
	if m.Version != "0.1.0" || m.Type != "sample" {
		return nil, fmt.Errorf("rvps message version %q type %q, want 0.1.0 sample: %w", m.Version, m.Type, spec.ErrUnsupported)
	}
	payload, err := base64.StdEncoding.DecodeString(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("rvps payload: not base64: %w", spec.ErrUnsupported)
	}
	var values map[string]any
	if err := json.Unmarshal(payload, &values); err != nil {
		return nil, fmt.Errorf("rvps payload: %v: %w", err, spec.ErrUnsupported)
	}
	out := make(map[string][]any, len(values))
	for name, v := range values {
		if name == "" {
			return nil, fmt.Errorf("reference value without a name: %w", spec.ErrUnsupported)
		}
		vs, ok := v.([]any)
		if !ok {
			vs = []any{v} // kbs-client sends a single value unless asked for an array
		}
		out[name] = vs
	}
	return out, nil
}
