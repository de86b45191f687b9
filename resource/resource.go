// Package resource is the grammar of broker resource paths and key ids
// (kbs:///<repo>/<type>/<tag>), on the ground floor of the import graph: the
// broker, its clients, image policies and key wrappers all name resources
// with it. Parse a key id once at the edge (ParseKID) and pass the Path on.
package resource

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

// DefaultRepo is the repository a two-segment path ("type/tag") lives in.
const DefaultRepo = "default"

// segmentRE is the reference's pattern for one resource path segment.
var segmentRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-\.]*$`)

// Path names a resource: kbs:///<repo>/<type>/<tag>.
type Path struct {
	Repo, Type, Tag string
}

// String returns "repo/type/tag".
func (p Path) String() string { return p.Repo + "/" + p.Type + "/" + p.Tag }

// KID returns the key-id form "kbs:///repo/type/tag" that ParseKID reads.
func (p Path) KID() string { return "kbs:///" + p.String() }

// Validate checks every segment against the reference pattern. Segments
// that are "." or ".." or contain "/" or "%" can never pass.
func (p Path) Validate() error {
	for _, s := range []string{p.Repo, p.Type, p.Tag} {
		if !ValidSegment(s) {
			return fmt.Errorf("invalid resource path segment %q: %w", s, spec.ErrUnsupported)
		}
	}
	return nil
}

// ValidSegment reports whether s is an acceptable resource path segment.
func ValidSegment(s string) bool {
	return len(s) <= 255 && segmentRE.MatchString(s)
}

// Parse parses "repo/type/tag" (no leading slash, no escapes;
// a percent sign is simply invalid). The repo may be omitted ("type/tag")
// and then defaults to DefaultRepo, as in the reference.
func Parse(s string) (Path, error) {
	parts := strings.Split(s, "/")
	var p Path
	switch len(parts) {
	case 3:
		p = Path{parts[0], parts[1], parts[2]}
	case 2:
		p = Path{DefaultRepo, parts[0], parts[1]}
	default:
		return Path{}, fmt.Errorf("resource path %q: want repo/type/tag: %w", s, spec.ErrUnsupported)
	}
	if err := p.Validate(); err != nil {
		return Path{}, err
	}
	return p, nil
}

// ParseKID parses a key id "kbs://[host[:port]]/<repo>/<type>/<tag>" (the
// host part, if any, is ignored as in the reference) into its resource
// path: exactly three segments, each valid (ValidSegment), no query,
// fragment, user info or escapes. A "kbs+<plugin>://" kid names a KBS
// plugin coffer does not serve and wraps spec.ErrUnsupported. This is the
// one key-id grammar: every coffer package that reads a kid calls it.
func ParseKID(kid string) (Path, error) {
	bad := func() (Path, error) {
		return Path{}, fmt.Errorf("invalid kid %q: want kbs:///<repo>/<type>/<tag>: %w", kid, spec.ErrUnsupported)
	}
	u, err := url.Parse(kid)
	if err != nil {
		return bad()
	}
	if u.Scheme != "kbs" {
		if plugin, ok := strings.CutPrefix(u.Scheme, "kbs+"); ok {
			return Path{}, fmt.Errorf("kid %q names KBS plugin %q, only kbs:// resources are supported: %w", kid, plugin, spec.ErrUnsupported)
		}
		return bad()
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" || !strings.HasPrefix(u.Path, "/") {
		return bad()
	}
	parts := strings.Split(u.Path[1:], "/")
	if len(parts) != 3 {
		return bad()
	}
	p := Path{parts[0], parts[1], parts[2]}
	if err := p.Validate(); err != nil {
		return Path{}, fmt.Errorf("invalid kid %q: %w", kid, err)
	}
	return p, nil
}

// ParseKeyID reads a key id as a person writes it on the command line or in
// a configuration: "repo/type/tag", "/repo/type/tag" or
// "kbs:///repo/type/tag" (exactly three segments; a host part is not
// accepted here). It is the one normaliser of owner-given key ids: the
// result's KID() is the form written into images.
func ParseKeyID(id string) (Path, error) {
	return ParseKID("kbs:///" + strings.TrimPrefix(strings.TrimPrefix(id, "kbs://"), "/"))
}
