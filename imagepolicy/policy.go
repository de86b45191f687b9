package imagepolicy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// Requirement types of containers-policy.json.
const (
	TypeInsecureAcceptAnything = "insecureAcceptAnything"
	TypeReject                 = "reject"
	TypeSignedBy               = "signedBy"
	TypeSigstoreSigned         = "sigstoreSigned"
)

// signedIdentity types.
const (
	IdentityMatchExact             = "matchExact"
	IdentityMatchRepoDigestOrExact = "matchRepoDigestOrExact"
	IdentityMatchRepository        = "matchRepository"
	IdentityExactReference         = "exactReference"
	IdentityExactRepository        = "exactRepository"
	IdentityRemapIdentity          = "remapIdentity"
)

// Bounds on a policy: real ones are a few KiB with a handful of scopes.
const (
	MaxPolicySize  = 1 << 20
	maxPolicyDepth = 16
	maxKeySize     = 1 << 20
)

// Policy is a parsed containers-policy.json (the format of
// /etc/containers/policy.json, which image-rs also reads).
type Policy struct {
	Default    []Requirement                       `json:"default"`
	Transports map[string]map[string][]Requirement `json:"transports,omitempty"`
}

// Requirement is one policy requirement; Type says which fields apply.
type Requirement struct {
	Type string `json:"type"`

	// signedBy: KeyType is "GPGKeys"; one of KeyPath, KeyPaths, KeyData.
	// sigstoreSigned: one of KeyPath, KeyPaths, KeyData, KeyDatas.
	KeyType  string   `json:"keyType,omitempty"`
	KeyPath  string   `json:"keyPath,omitempty"`
	KeyPaths []string `json:"keyPaths,omitempty"`
	KeyData  []byte   `json:"keyData,omitempty"`
	KeyDatas [][]byte `json:"keyDatas,omitempty"`

	// sigstoreSigned keyless: a Fulcio certificate instead of a key, which
	// needs a Rekor key (the SET dates the short-lived certificate).
	Fulcio *FulcioRule `json:"fulcio,omitempty"`
	// sigstoreSigned: when set, a Rekor SET signed by one of these keys
	// must cover the signature.
	RekorPublicKeyPath  string   `json:"rekorPublicKeyPath,omitempty"`
	RekorPublicKeyPaths []string `json:"rekorPublicKeyPaths,omitempty"`
	RekorPublicKeyData  []byte   `json:"rekorPublicKeyData,omitempty"`
	RekorPublicKeyDatas [][]byte `json:"rekorPublicKeyDatas,omitempty"`

	// sigstoreSigned (coffer extension, for sigstore bundles): a
	// trusted_root.json (sigstore's trust root format) whose Fulcio CAs,
	// Rekor v1/v2 logs, timestamp authorities and CT logs verify bundle
	// signatures offline; with it, fulcio needs no caPath/caData.
	TrustedRootPath string `json:"trustedRootPath,omitempty"`
	TrustedRootData []byte `json:"trustedRootData,omitempty"`

	SignedIdentity *IdentityRule `json:"signedIdentity,omitempty"`

	// trustedRoot is the trusted_root.json, from TrustedRootData at parse
	// time or TrustedRootPath by LoadKeys.
	trustedRoot []byte
	// keys and rekorKeys are the key material, from the *Data fields at
	// parse time and from the paths by Policy.LoadKeys.
	keys, rekorKeys [][]byte
}

// FulcioRule trusts certificates a Fulcio CA issued to one OIDC identity.
type FulcioRule struct {
	CAPath       string `json:"caPath,omitempty"`
	CAData       []byte `json:"caData,omitempty"`
	OIDCIssuer   string `json:"oidcIssuer"`
	SubjectEmail string `json:"subjectEmail"`

	ca []byte
}

// IdentityRule is a signedIdentity.
type IdentityRule struct {
	Type             string `json:"type"`
	DockerReference  string `json:"dockerReference,omitempty"`
	DockerRepository string `json:"dockerRepository,omitempty"`
	Prefix           string `json:"prefix,omitempty"`
	SignedPrefix     string `json:"signedPrefix,omitempty"`
}

// ParsePolicy parses and validates a policy without any I/O: key paths are
// loaded by LoadKeys. Unknown fields and requirement types are errors (as
// in containers/image): a policy coffer does not understand fully is not
// half-enforced.
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > MaxPolicySize {
		return nil, fmt.Errorf("policy: %d bytes, more than %d: %w", len(data), MaxPolicySize, spec.ErrUnsupported)
	}
	if err := checkDepth(data, maxPolicyDepth); err != nil {
		return nil, err
	}
	var top struct {
		Default    *[]json.RawMessage                      `json:"default"`
		Transports map[string]map[string][]json.RawMessage `json:"transports"`
	}
	if err := strictDecode(data, &top); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if top.Default == nil {
		return nil, fmt.Errorf("policy: no \"default\" requirements: %w", spec.ErrUnsupported)
	}
	p := &Policy{}
	var err error
	if p.Default, err = parseRequirements("default", *top.Default); err != nil {
		return nil, err
	}
	for tr, scopes := range top.Transports {
		if !knownTransport(tr) {
			return nil, fmt.Errorf("policy: transport %q: coffer reads docker, oci, oci-archive and docker-archive: %w", tr, spec.ErrUnsupported)
		}
		for scope, reqs := range scopes {
			if err := validScope(tr, scope); err != nil {
				return nil, err
			}
			rs, err := parseRequirements(tr+" scope "+strconvQuote(scope), reqs)
			if err != nil {
				return nil, err
			}
			if p.Transports == nil {
				p.Transports = map[string]map[string][]Requirement{}
			}
			if p.Transports[tr] == nil {
				p.Transports[tr] = map[string][]Requirement{}
			}
			p.Transports[tr][scope] = rs
		}
	}
	return p, nil
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

func knownTransport(t string) bool {
	switch t {
	case "docker", "oci", "oci-archive", "docker-archive":
		return true
	}
	return false
}

func parseRequirements(where string, raws []json.RawMessage) ([]Requirement, error) {
	if len(raws) == 0 {
		return nil, fmt.Errorf("policy %s: an empty requirement list (containers/image refuses it too): %w", where, spec.ErrUnsupported)
	}
	out := make([]Requirement, 0, len(raws))
	for i, raw := range raws {
		var r Requirement
		if err := strictDecode(raw, &r); err != nil {
			return nil, fmt.Errorf("policy %s requirement %d: %w", where, i, err)
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("policy %s requirement %d: %w", where, i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (r *Requirement) validate() error {
	keySources := 0
	for _, set := range []bool{r.KeyPath != "", r.KeyPaths != nil, r.KeyData != nil, r.KeyDatas != nil} {
		if set {
			keySources++
		}
	}
	rekorSources := 0
	for _, set := range []bool{r.RekorPublicKeyPath != "", r.RekorPublicKeyPaths != nil, r.RekorPublicKeyData != nil, r.RekorPublicKeyDatas != nil} {
		if set {
			rekorSources++
		}
	}
	rootSet := r.TrustedRootPath != "" || r.TrustedRootData != nil
	noKeys := keySources == 0 && rekorSources == 0 && r.Fulcio == nil && r.KeyType == "" && r.SignedIdentity == nil && !rootSet
	switch r.Type {
	case TypeInsecureAcceptAnything, TypeReject:
		if !noKeys {
			return fmt.Errorf("%s takes no other fields: %w", r.Type, spec.ErrUnsupported)
		}
		return nil
	case TypeSignedBy:
		if r.KeyType != "GPGKeys" {
			return fmt.Errorf("signedBy keyType %q: only GPGKeys is supported: %w", r.KeyType, spec.ErrUnsupported)
		}
		if r.KeyDatas != nil || r.Fulcio != nil || rekorSources != 0 || rootSet {
			return fmt.Errorf("signedBy has no keyDatas, fulcio, rekor keys or trustedRoot: %w", spec.ErrUnsupported)
		}
	case TypeSigstoreSigned:
		if r.KeyType != "" {
			return fmt.Errorf("sigstoreSigned has no keyType: %w", spec.ErrUnsupported)
		}
		if rekorSources > 1 || r.RekorPublicKeyPaths != nil && len(r.RekorPublicKeyPaths) == 0 || r.RekorPublicKeyDatas != nil && len(r.RekorPublicKeyDatas) == 0 {
			return fmt.Errorf("sigstoreSigned: at most one non-empty rekorPublicKey source: %w", spec.ErrUnsupported)
		}
		if r.RekorPublicKeyData != nil {
			r.rekorKeys = [][]byte{r.RekorPublicKeyData}
		}
		r.rekorKeys = append(r.rekorKeys, r.RekorPublicKeyDatas...)
		if r.TrustedRootPath != "" && r.TrustedRootData != nil {
			return fmt.Errorf("sigstoreSigned: trustedRootPath or trustedRootData, not both: %w", spec.ErrUnsupported)
		}
		r.trustedRoot = r.TrustedRootData
		if r.Fulcio != nil {
			if err := r.Fulcio.validate(rootSet); err != nil {
				return err
			}
			if keySources != 0 {
				return fmt.Errorf("sigstoreSigned takes a key or fulcio, not both: %w", spec.ErrUnsupported)
			}
			if rekorSources == 0 && !rootSet {
				return fmt.Errorf("sigstoreSigned with fulcio needs a rekorPublicKey (the Rekor SET dates the short-lived certificate): %w", spec.ErrUnsupported)
			}
			keySources = 1
		}
	default:
		return fmt.Errorf("unknown requirement type %q: %w", r.Type, spec.ErrUnsupported)
	}
	if keySources != 1 {
		return fmt.Errorf("%s needs exactly one of keyPath, keyPaths, keyData%s: %w", r.Type, map[bool]string{true: ", keyDatas"}[r.Type == TypeSigstoreSigned], spec.ErrUnsupported)
	}
	if r.KeyPaths != nil && len(r.KeyPaths) == 0 || r.KeyDatas != nil && len(r.KeyDatas) == 0 {
		return fmt.Errorf("%s: empty key list: %w", r.Type, spec.ErrUnsupported)
	}
	if r.KeyData != nil {
		r.keys = [][]byte{r.KeyData}
	}
	r.keys = append(r.keys, r.KeyDatas...)
	if r.SignedIdentity == nil {
		r.SignedIdentity = &IdentityRule{Type: IdentityMatchRepoDigestOrExact}
	}
	return r.SignedIdentity.validate()
}

// validate: the CA may be left out only when a trusted_root.json
// (rootSet) supplies Fulcio CAs.
func (f *FulcioRule) validate(rootSet bool) error {
	switch {
	case f.CAPath != "" && f.CAData != nil || f.CAPath == "" && f.CAData == nil && !rootSet:
		return fmt.Errorf("fulcio needs exactly one of caPath, caData (or a trustedRoot): %w", spec.ErrUnsupported)
	case f.OIDCIssuer == "" || f.SubjectEmail == "":
		return fmt.Errorf("fulcio needs oidcIssuer and subjectEmail: %w", spec.ErrUnsupported)
	}
	if f.CAData != nil {
		f.ca = f.CAData
	}
	return nil
}

func (id *IdentityRule) validate() error {
	only := func(set ...bool) error {
		n := 0
		for _, s := range set {
			if s {
				n++
			}
		}
		if n != len(set) || n != countSet(id) {
			return fmt.Errorf("signedIdentity %s: wrong fields: %w", id.Type, spec.ErrUnsupported)
		}
		return nil
	}
	switch id.Type {
	case IdentityMatchExact, IdentityMatchRepoDigestOrExact, IdentityMatchRepository:
		return only()
	case IdentityExactReference:
		if err := only(id.DockerReference != ""); err != nil {
			return err
		}
		if _, err := name.ParseReference(id.DockerReference); err != nil {
			return fmt.Errorf("signedIdentity exactReference %q: %v: %w", id.DockerReference, err, spec.ErrUnsupported)
		}
		if !hasTagOrDigest(id.DockerReference) {
			return fmt.Errorf("signedIdentity exactReference %q: needs a tag or digest: %w", id.DockerReference, spec.ErrUnsupported)
		}
		return nil
	case IdentityExactRepository:
		if err := only(id.DockerRepository != ""); err != nil {
			return err
		}
		if _, err := name.NewRepository(id.DockerRepository); err != nil || hasTagOrDigest(id.DockerRepository) {
			return fmt.Errorf("signedIdentity exactRepository %q: %v: %w", id.DockerRepository, err, spec.ErrUnsupported)
		}
		return nil
	case IdentityRemapIdentity:
		if err := only(id.Prefix != "", id.SignedPrefix != ""); err != nil {
			return err
		}
		for _, p := range []string{id.Prefix, id.SignedPrefix} {
			if err := validScope("docker", p); err != nil || strings.HasPrefix(p, "*.") {
				return fmt.Errorf("signedIdentity remapIdentity prefix %q: not a registry, namespace or repository: %w", p, spec.ErrUnsupported)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown signedIdentity type %q: %w", id.Type, spec.ErrUnsupported)
}

func countSet(id *IdentityRule) int {
	n := 0
	for _, s := range []string{id.DockerReference, id.DockerRepository, id.Prefix, id.SignedPrefix} {
		if s != "" {
			n++
		}
	}
	return n
}

func lastPathElem(s string) string { return s[strings.LastIndexByte(s, '/')+1:] }

// validScope checks a scope key of a transport.
func validScope(tr, scope string) error {
	if scope == "" {
		return nil
	}
	bad := func() error {
		return fmt.Errorf("policy: %s scope %q is not valid: %w", tr, scope, spec.ErrUnsupported)
	}
	if len(scope) > 1024 || strings.ContainsAny(scope, " \t\n\x00") {
		return bad()
	}
	if tr != "docker" {
		if !filepath.IsAbs(scope) {
			return bad()
		}
		return nil
	}
	if host, ok := strings.CutPrefix(scope, "*."); ok {
		if host == "" || strings.ContainsAny(host, "/*:@") {
			return bad()
		}
		return nil
	}
	if strings.ContainsAny(scope, "*") {
		return bad()
	}
	// A registry, a namespace, a repository, or a repository:tag / @digest.
	if _, err := name.ParseReference(scope); err == nil && strings.Contains(scope, "/") {
		return nil
	}
	if _, err := name.NewRegistry(scope); err == nil && !strings.Contains(scope, "/") {
		return nil
	}
	return bad()
}

func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%v: %w", err, spec.ErrUnsupported)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data: %w", spec.ErrUnsupported)
	}
	return nil
}

// checkDepth refuses JSON nested deeper than max, scanning linearly before
// any parser allocates for it.
func checkDepth(data []byte, max int) error {
	depth, inStr, esc := 0, false, false
	for _, c := range data {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			if depth++; depth > max {
				return fmt.Errorf("policy: nested deeper than %d: %w", max, spec.ErrUnsupported)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// LoadPolicy reads a policy from a file or, for "kbs:///REPO/TYPE/TAG",
// from the broker through fetch (after attestation), then loads its keys
// (LoadKeys).
func LoadPolicy(ctx context.Context, src string, fetch resource.Getter) (*Policy, error) {
	data, err := readSource(ctx, src, fetch)
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, err
	}
	if err := p.LoadKeys(ctx, fetch); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadKeys reads the key files the requirements name (keyPath, keyPaths):
// local files, or "kbs:///…" resources through fetch, as image-rs allows.
func (p *Policy) LoadKeys(ctx context.Context, fetch resource.Getter) error {
	load := func(reqs []Requirement) error {
		for i := range reqs {
			r := &reqs[i]
			paths := r.KeyPaths
			if r.KeyPath != "" {
				paths = []string{r.KeyPath}
			}
			for _, path := range paths {
				k, err := readSource(ctx, path, fetch)
				if err != nil {
					return fmt.Errorf("policy key %s: %w", path, err)
				}
				r.keys = append(r.keys, k)
			}
			rpaths := r.RekorPublicKeyPaths
			if r.RekorPublicKeyPath != "" {
				rpaths = []string{r.RekorPublicKeyPath}
			}
			for _, path := range rpaths {
				k, err := readSource(ctx, path, fetch)
				if err != nil {
					return fmt.Errorf("policy Rekor key %s: %w", path, err)
				}
				r.rekorKeys = append(r.rekorKeys, k)
			}
			if r.TrustedRootPath != "" {
				tr, err := readSource(ctx, r.TrustedRootPath, fetch)
				if err != nil {
					return fmt.Errorf("policy trusted root %s: %w", r.TrustedRootPath, err)
				}
				r.trustedRoot = tr
			}
			if r.Fulcio != nil && r.Fulcio.CAPath != "" {
				ca, err := readSource(ctx, r.Fulcio.CAPath, fetch)
				if err != nil {
					return fmt.Errorf("policy Fulcio CA %s: %w", r.Fulcio.CAPath, err)
				}
				r.Fulcio.ca = ca
			}
		}
		return nil
	}
	if err := load(p.Default); err != nil {
		return err
	}
	for _, scopes := range p.Transports {
		for _, reqs := range scopes {
			if err := load(reqs); err != nil {
				return err
			}
		}
	}
	return nil
}

func readSource(ctx context.Context, src string, fetch resource.Getter) ([]byte, error) {
	if strings.HasPrefix(src, "kbs:") {
		rp, err := resource.ParseKID(src)
		if err != nil {
			return nil, err
		}
		if fetch = nonNil(fetch); fetch == nil {
			return nil, fmt.Errorf("%s is a broker resource: pass --kbs", src)
		}
		return fetch.Get(ctx, rp)
	}
	f, err := os.Open(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w", err, spec.ErrNotFound)
		}
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicySize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxPolicySize {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", src, MaxPolicySize, spec.ErrUnsupported)
	}
	return data, nil
}

// Image is what a policy requirement evaluates: the reference as given,
// the digest and bytes of the manifest (or index) it resolved to.
type Image struct {
	Ref       transport.Reference
	Digest    v1.Hash
	Manifest  []byte
	transport []transport.Option
	lookaside string
}

// RequirementsFor returns the requirements that apply to ref (the most
// specific scope wins, as in containers/image) and the scope chosen ("" for
// the transport default, "default" for the policy default).
func (p *Policy) RequirementsFor(ref transport.Reference) ([]Requirement, string) {
	scopes := p.Transports[ref.Transport()]
	for _, s := range scopeCandidates(ref) {
		if rs, ok := scopes[s]; ok {
			return rs, s
		}
	}
	if rs, ok := scopes[""]; ok {
		return rs, ""
	}
	return p.Default, "default"
}

// scopeCandidates lists ref's policy identity and its namespaces, most
// specific first, exactly as containers/image's docker transport does
// (docker/policyconfiguration/naming.go DockerReferenceIdentity and
// DockerReferenceNamespaces, names normalised by docker/reference's
// ParseNormalizedNamed): for "busybox" "docker.io/library/busybox:latest",
// "docker.io/library/busybox", "docker.io/library", "docker.io", "*.io";
// for "reg.example.com:5000/ns/repo@sha256:…" the digest form, then
// "reg.example.com:5000/ns/repo", "reg.example.com:5000/ns",
// "reg.example.com:5000", "*.example.com", "*.com". Scopes are matched
// literally (never normalised), so "busybox" or "index.docker.io/…" never
// match, as in containers/image. For local transports: the absolute path
// (":tag" appended first), then its parents.
func scopeCandidates(ref transport.Reference) []string {
	if n, ok := transport.DockerName(ref); ok {
		repo := dockerPolicyName(n)
		var out []string
		switch r := n.(type) {
		case name.Tag:
			out = append(out, repo+":"+r.TagStr())
		case name.Digest:
			out = append(out, repo+"@"+r.DigestStr())
		}
		s := repo
		for {
			out = append(out, s)
			i := strings.LastIndexByte(s, '/')
			if i < 0 {
				break
			}
			s = s[:i]
		}
		// s is the registry host: its port goes (up to the first ':', as
		// containers/image cuts it), then one wildcard per dot.
		if i := strings.IndexByte(s, ':'); i >= 0 {
			s = s[:i]
		}
		for {
			i := strings.IndexByte(s, '.')
			if i < 0 {
				break
			}
			s = s[i+1:]
			out = append(out, "*."+s)
		}
		return out
	}
	abs, err := filepath.Abs(ref.LocalPath())
	if err != nil {
		return nil
	}
	var out []string
	if tag := transport.LocalTag(ref); tag != "" {
		out = append(out, abs+":"+tag)
	}
	for s := abs; ; s = filepath.Dir(s) {
		out = append(out, s)
		if s == filepath.Dir(s) {
			break
		}
	}
	return out
}

// dockerPolicyName is n's repository as containers/image names it:
// go-containerregistry's "index.docker.io" is "docker.io" there (both
// spellings parse to it), with the implicit "library/" of an official
// image; other registries keep their spelling (case and port included).
func dockerPolicyName(n name.Reference) string {
	reg := n.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + n.Context().RepositoryStr()
}

// tagAndDigest reports whether a docker reference names both a tag and a
// digest ("repo:tag@sha256:…"): containers/image's docker transport refuses
// those (its policy identity would be ambiguous), and so does Evaluate.
func tagAndDigest(ref transport.Reference) bool {
	n, ok := transport.DockerName(ref)
	if !ok {
		return false
	}
	d, ok := n.(name.Digest)
	if !ok {
		return false
	}
	base, _, _ := strings.Cut(d.String(), "@")
	return strings.Contains(lastPathElem(base), ":")
}

// Evaluate applies the requirements for img's reference: all must hold.
// It returns what vouched (signatures verified), or an error wrapping
// spec.ErrPolicyDenied (rejected, no valid signature) or spec.ErrIntegrity.
func (p *Policy) Evaluate(ctx context.Context, img Image) ([]string, error) {
	if tagAndDigest(img.Ref) {
		return nil, fmt.Errorf("%s: a reference with both a tag and a digest has no policy identity (containers/image refuses it): name the digest only: %w", img.Ref, spec.ErrPolicyDenied)
	}
	reqs, scope := p.RequirementsFor(img.Ref)
	var vouched []string
	for _, r := range reqs {
		switch r.Type {
		case TypeInsecureAcceptAnything:
		case TypeReject:
			return nil, fmt.Errorf("%s: the policy rejects it (scope %q): %w", img.Ref, scope, spec.ErrPolicyDenied)
		case TypeSigstoreSigned, TypeSignedBy:
			v, err := r.verify(ctx, img)
			if err != nil {
				return nil, fmt.Errorf("%s: %s requirement (scope %q): %w", img.Ref, r.Type, scope, err)
			}
			vouched = append(vouched, fmt.Sprintf("%s signature (policy scope %q): %s", r.Type, scope, v))
		}
	}
	return vouched, nil
}
