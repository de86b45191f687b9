package imagepolicy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// hubTo sends what is addressed to Docker Hub (index.docker.io over
// https) to the test registry at reg (plain HTTP on 127.0.0.1).
type hubTo struct{ reg string }

func (h hubTo) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != "index.docker.io" {
		return nil, fmt.Errorf("test transport: unexpected host %s", r.URL.Host)
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = "http", h.reg, h.reg
	return http.DefaultTransport.RoundTrip(r)
}

// Attack P9 (review 3): a sigstoreSigned requirement written the way
// containers/image normalises Docker Hub ("docker.io/myorg") was skipped
// because coffer's candidates said "index.docker.io/myorg/…", and a
// permissive default let an unsigned image through `verify` and
// `pull --policy`. Both must refuse it now; an image outside the scope
// still takes the default (the test can tell the two apart).
func TestHubScopeRequirementApplies(t *testing.T) {
	w := newWorld(t)
	_, pub := ecKey(t)
	for _, repo := range []string{"myorg/app:1", "other/app:1"} {
		push(t, mustTag(t, w.reg+"/"+repo), plainImage(t, "#!/bin/sh\necho unsigned\n"))
	}
	pol, err := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "insecureAcceptAnything"}],
		"transports": {"docker": {"docker.io/myorg": [{"type": "sigstoreSigned", "keyData": %q}]}}}`,
		base64.StdEncoding.EncodeToString(pub))))
	if err != nil {
		t.Fatal(err)
	}
	topt := transport.WithTransport(hubTo{w.reg})
	chk, err := imagepolicy.New(imagepolicy.WithPolicy(pol), imagepolicy.WithTransport(topt))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ref := range []string{"docker://myorg/app:1", "docker://docker.io/myorg/app:1", "docker://index.docker.io/myorg/app:1"} {
		r := mustParse(t, ref)
		if _, err := chk.Check(ctx, r, v1.Platform{}); !errors.Is(err, spec.ErrPolicyDenied) {
			t.Errorf("verify %s (unsigned, scope docker.io/myorg) = %v, want ErrPolicyDenied", ref, err)
		}
		dir := filepath.Join(t.TempDir(), "rootfs")
		if err := pull.Pull(ctx, r, dir, pull.WithTransport(topt), pull.WithVerify(chk.Verify)); !errors.Is(err, spec.ErrPolicyDenied) {
			t.Errorf("pull --policy %s = %v, want ErrPolicyDenied", ref, err)
		}
	}
	if _, err := chk.Check(ctx, mustParse(t, "docker://other/app:1"), v1.Platform{}); err != nil {
		t.Errorf("verify docker.io/other/app:1 (default insecureAcceptAnything) = %v", err)
	}
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}
