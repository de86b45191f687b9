package aa

import (
	"fmt"
	"strings"

	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// Params are the encrypt-side parameters of the scheme, as CoCo's
// coco_keyprovider takes them:
//
//	keypath=/path/to/kek::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM
type Params struct {
	// KeyPath is a file holding the 32-byte KEK (may be empty when the
	// caller supplies the KEK itself, e.g. after registering it in a broker).
	KeyPath string
	// KeyID is the kid written into the annotation: kbs:///<repo>/<type>/<tag>.
	KeyID string
	// Algorithm is the wrap_type; only A256GCM (also the default).
	Algorithm string
}

// ParseParams parses the parameter string. It accepts the bare form above,
// and the same prefixed by "attestation-agent:" or
// "provider:attestation-agent:" (the recipient string skopeo and coffer take,
// from which ocicrypt cuts the part it forwards to the keyprovider). keyid is
// required (coco_keyprovider would invent a random one, which nobody could
// then provision); unknown keys are rejected rather than ignored, so a typo
// cannot silently change the kid or the key.
func ParseParams(s string) (Params, error) {
	s = strings.TrimPrefix(s, "provider:")
	s = strings.TrimPrefix(s, ProviderName+":")
	var p Params
	seen := map[string]bool{}
	for field := range strings.SplitSeq(s, "::") {
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return Params{}, fmt.Errorf("attestation-agent parameters: %q is not key=value", field)
		}
		if seen[k] {
			return Params{}, fmt.Errorf("attestation-agent parameters: %s given twice", k)
		}
		seen[k] = true
		switch k {
		case "keypath":
			if v == "" {
				return Params{}, fmt.Errorf("attestation-agent parameters: empty keypath")
			}
			p.KeyPath = v
		case "keyid":
			p.KeyID = v
		case "algorithm":
			p.Algorithm = v
		case "sample":
			return Params{}, fmt.Errorf("attestation-agent parameters: sample (a hard-coded public key) is not supported: %w", spec.ErrUnsupported)
		default:
			return Params{}, fmt.Errorf("attestation-agent parameters: unknown key %q (want keypath, keyid, algorithm)", k)
		}
	}
	if p.KeyID == "" {
		return Params{}, fmt.Errorf("attestation-agent parameters: keyid=kbs:///<repo>/<type>/<tag> is required")
	}
	if _, err := resource.ParseKID(p.KeyID); err != nil {
		return Params{}, err
	}
	switch p.Algorithm {
	case "":
		p.Algorithm = AlgorithmA256GCM
	case AlgorithmA256GCM:
	default:
		return Params{}, fmt.Errorf("attestation-agent parameters: algorithm %q (only %s): %w", p.Algorithm, AlgorithmA256GCM, spec.ErrUnsupported)
	}
	return p, nil
}

// String returns the canonical parameter string (ParseParams inverse).
func (p Params) String() string {
	var b strings.Builder
	if p.KeyPath != "" {
		b.WriteString("keypath=" + p.KeyPath + "::")
	}
	b.WriteString("keyid=" + p.KeyID)
	alg := p.Algorithm
	if alg == "" {
		alg = AlgorithmA256GCM
	}
	b.WriteString("::algorithm=" + alg)
	return b.String()
}
