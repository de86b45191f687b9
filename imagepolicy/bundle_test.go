package imagepolicy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// bundleMention: the swap attack copies the .sig tag only, so the
// swapped-in image has no bundle under the attacked name.
func bundleMention(_ string, _, evil v1.Hash) []string {
	return []string{evil.String(), "no signature found"}
}

// An image signed with a sigstore bundle (coffer sign --bundle, cosign
// v3's format) passes a keyData policy; every registry-side tampering is
// refused before anything is unpacked.
func TestBundleSignedImageRefusesTampering(t *testing.T) {
	w := newWorld(t)
	ref := w.encrypt(t, plainImage(t, "#!/bin/sh\necho good\n"), "team/app:enc", "default/image_key/app", false)
	other := w.encrypt(t, plainImage(t, "#!/bin/sh\necho other\n"), "team/other:enc", "default/image_key/other", false)
	key, pub := ecKey(t)
	for _, r := range []transport.Reference{ref, other} {
		if _, err := imagepolicy.Sign(context.Background(), r, key, imagepolicy.WithBundle()); err != nil {
			t.Fatal(err)
		}
	}
	pol := sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact)
	runAttacks(t, w, ref, other, spec.ErrPolicyDenied, bundleMention, imagepolicy.WithPolicy(pol))
}

// What a bundle proves: the key, the digest (via the DSSE subject) and,
// for coffer's bundles, the name in the subject.
func TestBundleVerification(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	ref := w.encrypt(t, plainImage(t, "good"), "team/app:enc", "default/image_key/app", false)
	other := w.encrypt(t, plainImage(t, "other"), "team/other:enc", "default/image_key/other", false)
	key, pub := ecKey(t)
	_, otherPub := ecKey(t)
	signed, err := imagepolicy.Sign(ctx, ref, key, imagepolicy.WithBundle())
	if err != nil {
		t.Fatal(err)
	}
	osigned, err := imagepolicy.Sign(ctx, other, key, imagepolicy.WithBundle())
	if err != nil {
		t.Fatal(err)
	}
	// Only a referrer was written: no .sig tag.
	n, _ := transport.DockerName(ref)
	if _, err := remote.Head(n.Context().Tag(imagepolicy.SignatureTag(signed.Digest))); err == nil {
		t.Error("a bundle signature also wrote the .sig tag")
	}
	var vouched string
	check := func(p *imagepolicy.Policy, r transport.Reference) error {
		chk, _ := imagepolicy.New(imagepolicy.WithPolicy(p), imagepolicy.WithRequireSignature(true))
		res, err := chk.Check(ctx, r, v1.Platform{})
		vouched = strings.Join(res.Vouched, " ")
		return err
	}
	byDigest := mustParse(t, "docker://"+w.reg+"/team/app@"+signed.Digest.String())
	// The other image under this repository's name, its bundle copied
	// along (referrers are public too).
	swapped := mustParse(t, "docker://"+w.reg+"/team/app@"+osigned.Digest.String())
	on, _ := transport.DockerName(other)
	oimg, _ := remote.Image(on)
	if err := remote.Write(n.Context().Digest(osigned.Digest.String()), oimg); err != nil {
		t.Fatal(err)
	}
	bn, _ := transport.DockerName(osigned.At)
	bimg, err := remote.Image(bn)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(n.Context().Digest(bn.(interface{ DigestStr() string }).DigestStr()), bimg); err != nil {
		t.Fatal(err)
	}
	exact := func(repo string) *imagepolicy.Policy {
		p, err := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q,
			"signedIdentity": {"type": "exactRepository", "dockerRepository": %q}}]}`, base64.StdEncoding.EncodeToString(pub), repo)))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		p    *imagepolicy.Policy
		ref  transport.Reference
		want string // "" = accepted
	}{
		{"right key", sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact), ref, ""},
		{"by digest", sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact), byDigest, ""},
		{"exactRepository of the signed name", exact(w.reg + "/team/app"), ref, ""},
		{"other key", sigstorePolicy(t, w.reg+"/team", otherPub, imagepolicy.IdentityMatchRepoDigestOrExact), ref, "verifies with none of the 1 key"},
		{"exactRepository elsewhere", exact("reg.example/prod"), ref, "is not in reg.example/prod"},
		{"another image's bundle under this name", sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact), swapped, "does not match"},
	} {
		err := check(tc.p, tc.ref)
		if (tc.want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, spec.ErrPolicyDenied))) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		if err == nil && !strings.Contains(vouched, "sigstore bundle") {
			t.Errorf("%s: vouched %q, want a sigstore bundle", tc.name, vouched)
		}
	}
	// A v2 signature and a bundle side by side: each is accepted on its own.
	key2, pub2 := ecKey(t)
	if _, err := imagepolicy.Sign(ctx, ref, key2); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{pub, pub2} {
		if err := check(sigstorePolicy(t, w.reg+"/team", p, imagepolicy.IdentityMatchRepoDigestOrExact), ref); err != nil {
			t.Errorf("bundle beside a v2 signature: %v", err)
		}
	}
}

// Registries without the referrers API: the bundle goes to, and is read
// from, the "sha256-<hex>" referrers tag fallback.
func TestBundleReferrersTagFallback(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	reg := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	ref := mustParse(t, "docker://"+reg+"/team/app:v1")
	img, _ := random.Image(256, 1)
	if err := transport.Write(ctx, ref, transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	key, pub := ecKey(t)
	signed, err := imagepolicy.Sign(ctx, ref, key, imagepolicy.WithBundle())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := transport.DockerName(ref)
	fallback := n.Context().Tag(signed.Digest.Algorithm + "-" + signed.Digest.Hex)
	if _, err := remote.Index(fallback); err != nil {
		t.Fatalf("no referrers fallback tag %s: %v", fallback, err)
	}
	chk, _ := imagepolicy.New(imagepolicy.WithPolicy(sigstorePolicy(t, reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact)))
	if _, err := chk.Check(ctx, ref, v1.Platform{}); err != nil {
		t.Fatalf("bundle through the tag fallback: %v", err)
	}
	_, otherPub := ecKey(t)
	chk, _ = imagepolicy.New(imagepolicy.WithPolicy(sigstorePolicy(t, reg+"/team", otherPub, imagepolicy.IdentityMatchRepoDigestOrExact)))
	if _, err := chk.Check(ctx, ref, v1.Platform{}); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("other key through the tag fallback: err = %v, want denied", err)
	}
}
