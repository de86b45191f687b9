package imagepolicy

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// The expected candidates follow containers/image at commit
// df7e80d2d19872b61f352a8a182ec934dc0c2346 (2025-08-29):
// docker/policyconfiguration/naming.go (DockerReferenceIdentity: the
// normalised name plus ":tag" or "@digest"; DockerReferenceNamespaces: each
// parent namespace down to the host, then the host's port cut at the first
// ':' and one "*.<rest>" per dot), docker/reference/normalize.go
// (splitDockerDomain: no '.'/':' in the first component and not
// "localhost" means docker.io; index.docker.io is docker.io; a one-element
// docker.io path gets "library/"; the path must be lowercase) and
// docker/docker_transport.go (no tag means :latest; a tag and a digest
// together are refused).
const sha = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestScopeCandidatesFollowContainersImage(t *testing.T) {
	t.Parallel()
	hub := func(repo, suffix string) []string {
		out := []string{"docker.io/" + repo + suffix}
		for s := "docker.io/" + repo; ; {
			out = append(out, s)
			i := strings.LastIndexByte(s, '/')
			if i < 0 {
				break
			}
			s = s[:i]
		}
		return append(out, "*.io")
	}
	for _, tc := range []struct {
		ref  string
		want []string
	}{
		{"docker://busybox", hub("library/busybox", ":latest")},
		{"docker://busybox:1.36", hub("library/busybox", ":1.36")},
		{"docker://docker.io/busybox:1.36", hub("library/busybox", ":1.36")},
		{"docker://docker.io/library/busybox:1.36", hub("library/busybox", ":1.36")},
		{"docker://index.docker.io/library/busybox:1.36", hub("library/busybox", ":1.36")},
		{"docker://library/busybox@" + sha, hub("library/busybox", "@"+sha)},
		{"docker://myorg/app:1", hub("myorg/app", ":1")},
		{"docker://docker.io/myorg/app:1", hub("myorg/app", ":1")},
		{"docker://docker.io/myorg/team/app@" + sha, hub("myorg/team/app", "@"+sha)},
		// "notlocalhost" has no '.' or ':': a Docker Hub namespace.
		{"docker://notlocalhost/repo:1", hub("notlocalhost/repo", ":1")},
		{"docker://localhost/repo:1", []string{"localhost/repo:1", "localhost/repo", "localhost"}},
		{"docker://localhost:5000/ns/repo:v", []string{"localhost:5000/ns/repo:v", "localhost:5000/ns/repo", "localhost:5000/ns", "localhost:5000"}},
		{"docker://quay.io/org/app", []string{"quay.io/org/app:latest", "quay.io/org/app", "quay.io/org", "quay.io", "*.io"}},
		{"docker://reg.example.com:8443/ns/repo:v", []string{"reg.example.com:8443/ns/repo:v", "reg.example.com:8443/ns/repo",
			"reg.example.com:8443/ns", "reg.example.com:8443", "*.example.com", "*.com"}},
		{"docker://a.b.example.com/x@" + sha, []string{"a.b.example.com/x@" + sha, "a.b.example.com/x", "a.b.example.com",
			"*.b.example.com", "*.example.com", "*.com"}},
		{"docker://127.0.0.1:5000/app:1", []string{"127.0.0.1:5000/app:1", "127.0.0.1:5000/app", "127.0.0.1:5000", "*.0.0.1", "*.0.1", "*.1"}},
		// The host keeps its case (only the path must be lowercase), and a
		// registry spelled other than docker.io / index.docker.io is not
		// Docker Hub.
		{"docker://Reg.Example.com/ns/app:1", []string{"Reg.Example.com/ns/app:1", "Reg.Example.com/ns/app", "Reg.Example.com/ns",
			"Reg.Example.com", "*.Example.com", "*.com"}},
		{"docker://registry-1.docker.io/busybox:1", []string{"registry-1.docker.io/busybox:1", "registry-1.docker.io/busybox",
			"registry-1.docker.io", "*.docker.io", "*.io"}},
		{"docker://[::1]:5000/app:1", []string{"[::1]:5000/app:1", "[::1]:5000/app", "[::1]:5000"}},
	} {
		ref, err := transport.Parse(tc.ref)
		if err != nil {
			t.Errorf("%s: %v", tc.ref, err)
			continue
		}
		if got := scopeCandidates(ref); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.ref, got, tc.want)
		}
	}
	// An upper-case path is refused by both parsers.
	if _, err := transport.Parse("docker://docker.io/MyOrg/app:1"); err == nil {
		t.Error("docker.io/MyOrg/app:1 parsed; containers/image refuses an upper-case repository")
	}
}

// TestScopeMatchesAsContainersImage: which scope of one policy applies to
// each reference (the most specific candidate present; scopes are never
// normalised, so "busybox", "library/busybox" and "index.docker.io/…"
// never match).
func TestScopeMatchesAsContainersImage(t *testing.T) {
	t.Parallel()
	scopes := []string{
		"docker.io/myorg", "docker.io/myorg/special:v2", "docker.io/library/busybox", "docker.io/library/busybox:1.36",
		"docker.io/library/alpine@" + sha, "docker.io/library", "busybox", "library/nginx", "index.docker.io/library/nginx",
		"index.docker.io", "reg.example.com:8443/ns", "reg.example.com", "*.example.com", "localhost:5000", "*.io",
	}
	doc := `{"default": [{"type": "reject"}], "transports": {"docker": {`
	for i, s := range scopes {
		if i > 0 {
			doc += ","
		}
		doc += `"` + s + `": [{"type": "insecureAcceptAnything"}]`
	}
	p, err := ParsePolicy([]byte(doc + `}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ref, scope string }{
		{"docker://myorg/app:1", "docker.io/myorg"},
		{"docker://docker.io/myorg/app@" + sha, "docker.io/myorg"},
		{"docker://index.docker.io/myorg/app:1", "docker.io/myorg"},
		{"docker://myorg/special:v2", "docker.io/myorg/special:v2"},
		{"docker://myorg/special:v3", "docker.io/myorg"},
		{"docker://busybox", "docker.io/library/busybox"},
		{"docker://busybox:1.36", "docker.io/library/busybox:1.36"},
		{"docker://docker.io/busybox:1.35", "docker.io/library/busybox"},
		{"docker://alpine@" + sha, "docker.io/library/alpine@" + sha},
		{"docker://alpine:3", "docker.io/library"},
		{"docker://nginx:1", "docker.io/library"},
		{"docker://otherorg/app:1", "*.io"},
		{"docker://quay.io/x/y:1", "*.io"},
		{"docker://reg.example.com:8443/ns/app:1", "reg.example.com:8443/ns"},
		{"docker://reg.example.com:8443/other/app:1", "*.example.com"},
		{"docker://reg.example.com/ns/app:1", "reg.example.com"},
		{"docker://a.b.example.com/app:1", "*.example.com"},
		{"docker://localhost:5000/app:1", "localhost:5000"},
		{"docker://localhost/app:1", "default"},
		{"docker://reg.example.org/app:1", "default"},
	} {
		ref, err := transport.Parse(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		if _, scope := p.RequirementsFor(ref); scope != tc.scope {
			t.Errorf("%s: scope %q, want %q", tc.ref, scope, tc.scope)
		}
	}
}

// A reference with a tag and a digest has no identity in containers/image:
// Evaluate refuses it rather than guess which one the policy meant.
func TestEvaluateRefusesTagAndDigest(t *testing.T) {
	t.Parallel()
	p, err := ParsePolicy([]byte(`{"default": [{"type": "insecureAcceptAnything"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := transport.Parse("docker://reg.example.com/app:v1@" + sha)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Evaluate(t.Context(), Image{Ref: ref}); !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "both a tag and a digest") {
		t.Errorf("Evaluate(%s) = %v, want ErrPolicyDenied naming the tag and digest", ref, err)
	}
	ref, _ = transport.Parse("docker://reg.example.com:5000/app@" + sha)
	if _, err := p.Evaluate(t.Context(), Image{Ref: ref}); err != nil {
		t.Errorf("Evaluate(%s) = %v (a port is not a tag)", ref, err)
	}
}
