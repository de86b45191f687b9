package imagepolicy

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

const samplePolicy = `{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "": [{"type": "insecureAcceptAnything"}],
      "reg.example/team/app": [{"type": "sigstoreSigned", "keyData": "LS0tLS1CRUdJTg==", "signedIdentity": {"type": "matchRepository"}}],
      "reg.example/team": [{"type": "reject"}],
      "reg.example/team/app:v2": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/key.gpg"}],
      "*.example.com": [{"type": "reject"}],
      "quay.io": [{"type": "sigstoreSigned", "keyPaths": ["/a.pub", "/b.pub"],
        "signedIdentity": {"type": "remapIdentity", "prefix": "quay.io/mirror", "signedPrefix": "docker.io/library"}}]
    },
    "oci": {
      "/srv/images": [{"type": "reject"}],
      "/srv/images/app:v1": [{"type": "insecureAcceptAnything"}]
    }
  }
}`

func TestParsePolicyAndScopes(t *testing.T) {
	t.Parallel()
	p, err := ParsePolicy([]byte(samplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ref, scope, typ string }{
		{"docker://reg.example/team/app:v1", "reg.example/team/app", TypeSigstoreSigned},
		{"docker://reg.example/team/app:v2", "reg.example/team/app:v2", TypeSignedBy},
		{"docker://reg.example/team/other:v1", "reg.example/team", TypeReject},
		{"docker://reg.example/solo:v1", "", TypeInsecureAcceptAnything},
		{"docker://a.b.example.com/x:v1", "*.example.com", TypeReject},
		{"docker://quay.io/mirror/busybox:1", "quay.io", TypeSigstoreSigned},
		{"oci:/srv/images/app:v1", "/srv/images/app:v1", TypeInsecureAcceptAnything},
		{"oci:/srv/images/app:v2", "/srv/images", TypeReject},
		{"oci:/elsewhere:v1", "default", TypeReject},
		{"oci-archive:/srv/images/a.tar", "default", TypeReject},
	} {
		ref, err := transport.Parse(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		reqs, scope := p.RequirementsFor(ref)
		if scope != tc.scope || reqs[0].Type != tc.typ {
			t.Errorf("%s: scope %q %s, want %q %s", tc.ref, scope, reqs[0].Type, tc.scope, tc.typ)
		}
	}
	app := p.Transports["docker"]["reg.example/team/app"][0]
	if string(app.KeyData) != "-----BEGIN" || len(app.keys) != 1 {
		t.Errorf("keyData = %q (%d keys), want the base64-decoded bytes", app.KeyData, len(app.keys))
	}
	if got := p.Transports["docker"]["reg.example/team/app:v2"][0].SignedIdentity.Type; got != IdentityMatchRepoDigestOrExact {
		t.Errorf("default signedIdentity = %s, want matchRepoDigestOrExact", got)
	}
}

func TestParsePolicyRejects(t *testing.T) {
	t.Parallel()
	key := `"keyPath": "/k.pub"`
	for _, tc := range []struct{ name, in, want string }{
		{"no default", `{"transports": {}}`, `no "default"`},
		{"empty default", `{"default": []}`, "empty requirement list"},
		{"unknown field", `{"default": [{"type": "reject"}], "extra": 1}`, "unknown field"},
		{"unknown type", `{"default": [{"type": "signedByX509"}]}`, "unknown requirement type"},
		{"reject with key", `{"default": [{"type": "reject", ` + key + `}]}`, "takes no other fields"},
		{"two key sources", `{"default": [{"type": "sigstoreSigned", ` + key + `, "keyData": "eA=="}]}`, "exactly one"},
		{"no key", `{"default": [{"type": "sigstoreSigned"}]}`, "exactly one"},
		{"pki", `{"default": [{"type": "sigstoreSigned", "pki": {}}]}`, "unknown field"},
		{"gpg keyType", `{"default": [{"type": "signedBy", "keyType": "X509Certificates", ` + key + `}]}`, "only GPGKeys"},
		{"signedBy keyDatas", `{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyDatas": ["eA=="]}]}`, "no keyDatas"},
		{"bad identity", `{"default": [{"type": "sigstoreSigned", ` + key + `, "signedIdentity": {"type": "matchAnything"}}]}`, "unknown signedIdentity"},
		{"identity extra field", `{"default": [{"type": "sigstoreSigned", ` + key + `, "signedIdentity": {"type": "matchExact", "prefix": "a"}}]}`, "wrong fields"},
		{"exactReference no tag", `{"default": [{"type": "sigstoreSigned", ` + key + `, "signedIdentity": {"type": "exactReference", "dockerReference": "reg.example/app"}}]}`, "needs a tag"},
		{"exactRepository missing", `{"default": [{"type": "sigstoreSigned", ` + key + `, "signedIdentity": {"type": "exactRepository"}}]}`, "wrong fields"},
		{"remap wildcard", `{"default": [{"type": "sigstoreSigned", ` + key + `, "signedIdentity": {"type": "remapIdentity", "prefix": "*.a.com", "signedPrefix": "b.com"}}]}`, "prefix"},
		{"unknown transport", `{"default": [{"type": "reject"}], "transports": {"atomic": {"": [{"type": "reject"}]}}}`, "transport"},
		{"bad docker scope", `{"default": [{"type": "reject"}], "transports": {"docker": {"UPPER/x y": [{"type": "reject"}]}}}`, "scope"},
		{"relative oci scope", `{"default": [{"type": "reject"}], "transports": {"oci": {"rel/dir": [{"type": "reject"}]}}}`, "scope"},
		{"deep", strings.Repeat("[", 40) + strings.Repeat("]", 40), "nested deeper"},
		{"huge", `{"default": [{"type": "reject"}]}` + strings.Repeat(" ", MaxPolicySize), "bytes"},
		{"trailing", `{"default": [{"type": "reject"}]} {}`, "trailing"},
	} {
		_, err := ParsePolicy([]byte(tc.in))
		if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrUnsupported containing %q", tc.name, err, tc.want)
		}
	}
}

func TestEvaluateRejectAndAccept(t *testing.T) {
	t.Parallel()
	p, err := ParsePolicy([]byte(`{"default": [{"type": "reject"}], "transports": {"docker": {"reg.example/ok": [{"type": "insecureAcceptAnything"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		want error
	}{
		{"docker://reg.example/ok:v1", nil},
		{"docker://reg.example/other:v1", spec.ErrPolicyDenied},
	} {
		ref, _ := transport.Parse(tc.ref)
		v, err := p.Evaluate(context.Background(), Image{Ref: ref})
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || len(v) != 0 {
			t.Errorf("%s: vouched %v err %v, want err %v and nothing vouching (insecureAcceptAnything vouches for nothing)", tc.ref, v, err, tc.want)
		}
	}
}

func TestIdentityRules(t *testing.T) {
	t.Parallel()
	h := "sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct {
		rule   IdentityRule
		image  string // as pulled
		signed string // docker-reference in the payload
		ok     bool
	}{
		{IdentityRule{Type: IdentityMatchRepoDigestOrExact}, "docker://reg.example/app:v1", "reg.example/app:v1", true},
		{IdentityRule{Type: IdentityMatchRepoDigestOrExact}, "docker://reg.example/app:v1", "reg.example/app:v2", false},
		{IdentityRule{Type: IdentityMatchRepoDigestOrExact}, "docker://reg.example/app:v1", "reg.example/app", false},
		{IdentityRule{Type: IdentityMatchRepoDigestOrExact}, "docker://reg.example/app@" + h, "reg.example/app:v9", true},
		{IdentityRule{Type: IdentityMatchRepoDigestOrExact}, "docker://reg.example/app@" + h, "reg.example/evil:v9", false},
		{IdentityRule{Type: IdentityMatchExact}, "docker://reg.example/app:v1", "reg.example/app:v1", true},
		{IdentityRule{Type: IdentityMatchExact}, "docker://reg.example/app@" + h, "reg.example/app:v1", false},
		{IdentityRule{Type: IdentityMatchRepository}, "docker://reg.example/app:v1", "reg.example/app", true},
		{IdentityRule{Type: IdentityMatchRepository}, "docker://reg.example/app:v1", "reg.example/app2:v1", false},
		{IdentityRule{Type: IdentityMatchRepository}, "docker://alpine:3", "docker.io/library/alpine", true},
		{IdentityRule{Type: IdentityExactReference, DockerReference: "reg.example/app:prod"}, "oci:/x:v1", "reg.example/app:prod", true},
		{IdentityRule{Type: IdentityExactReference, DockerReference: "reg.example/app:prod"}, "docker://reg.example/app:prod", "reg.example/app:dev", false},
		{IdentityRule{Type: IdentityExactRepository, DockerRepository: "reg.example/app"}, "docker://mirror.example/x:1", "reg.example/app:any", true},
		{IdentityRule{Type: IdentityExactRepository, DockerRepository: "reg.example/app"}, "docker://mirror.example/x:1", "reg.example/other:any", false},
		{IdentityRule{Type: IdentityRemapIdentity, Prefix: "mirror.example/lib", SignedPrefix: "docker.io/library"}, "docker://mirror.example/lib/busybox:1", "docker.io/library/busybox:1", true},
		{IdentityRule{Type: IdentityRemapIdentity, Prefix: "mirror.example/lib", SignedPrefix: "docker.io/library"}, "docker://mirror.example/libx/busybox:1", "docker.io/library/busybox:1", false},
		{IdentityRule{Type: IdentityRemapIdentity, Prefix: "mirror.example/lib", SignedPrefix: "docker.io/library"}, "docker://mirror.example/lib/busybox:1", "docker.io/library/busybox:2", false},
		// The prefix is matched as containers/image names the image:
		// Docker Hub is docker.io, never index.docker.io.
		{IdentityRule{Type: IdentityRemapIdentity, Prefix: "docker.io/myorg", SignedPrefix: "reg.example/myorg"}, "docker://myorg/app:1", "reg.example/myorg/app:1", true},
		{IdentityRule{Type: IdentityRemapIdentity, Prefix: "docker.io", SignedPrefix: "mirror.example"}, "docker://busybox:1", "mirror.example/library/busybox:1", true},
		{IdentityRule{Type: IdentityRemapIdentity, Prefix: "index.docker.io/myorg", SignedPrefix: "reg.example/myorg"}, "docker://myorg/app:1", "reg.example/myorg/app:1", false},
		{IdentityRule{Type: IdentityMatchRepoDigestOrExact}, "oci:/x:v1", "reg.example/app:v1", false},
		{IdentityRule{Type: IdentityMatchRepository}, "docker://reg.example/app:v1", "NOT A REF", false},
	} {
		ref, err := transport.Parse(tc.image)
		if err != nil {
			t.Fatal(err)
		}
		err = tc.rule.match(ref, tc.signed)
		if (err == nil) != tc.ok {
			t.Errorf("%s: image %s signed %s: err = %v, want ok=%v", tc.rule.Type, tc.image, tc.signed, err, tc.ok)
		}
	}
}

// FuzzParsePolicy: an accepted policy is one coffer understands entirely,
// so its own JSON parses again to the same policy, every requirement list
// is non-empty, and every signing requirement has exactly one key source
// and a signedIdentity.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(samplePolicy))
	f.Add([]byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	f.Add([]byte(`{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":"eA==","signedIdentity":{"type":"exactRepository","dockerRepository":"a.b/c"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := ParsePolicy(data)
		if err != nil {
			if !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("error not wrapping ErrUnsupported: %v", err)
			}
			return
		}
		check := func(reqs []Requirement) {
			if len(reqs) == 0 {
				t.Fatal("accepted an empty requirement list")
			}
			for _, r := range reqs {
				if (r.Type == TypeSignedBy || r.Type == TypeSigstoreSigned) && r.SignedIdentity == nil {
					t.Fatalf("signing requirement without signedIdentity: %+v", r)
				}
			}
		}
		check(p.Default)
		for _, scopes := range p.Transports {
			for _, reqs := range scopes {
				check(reqs)
			}
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParsePolicy(again)
		if err != nil {
			t.Fatalf("own JSON %s does not parse: %v", again, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the policy:\n%+v\n%+v", p, q)
		}
	})
}
