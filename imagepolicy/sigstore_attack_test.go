package imagepolicy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func ecKey(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// sigstorePolicy accepts images of repo signed with pub, rejects the rest.
func sigstorePolicy(t testing.TB, repo string, pub []byte, identity string) *imagepolicy.Policy {
	t.Helper()
	p, err := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [
		{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": %q}}]}}}`,
		repo, base64.StdEncoding.EncodeToString(pub), identity)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSigstoreSignedImageRefusesTampering(t *testing.T) {
	w := newWorld(t)
	ref := w.encrypt(t, plainImage(t, "#!/bin/sh\necho good\n"), "team/app:enc", "default/image_key/app", false)
	other := w.encrypt(t, plainImage(t, "#!/bin/sh\necho other\n"), "team/other:enc", "default/image_key/other", false)
	key, pub := ecKey(t)
	for _, r := range []transport.Reference{ref, other} {
		if _, err := imagepolicy.Sign(context.Background(), r, key); err != nil {
			t.Fatal(err)
		}
	}
	pol := sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact)
	runAttacks(t, w, ref, other, spec.ErrPolicyDenied, signedMention, imagepolicy.WithPolicy(pol))
}

// What a signature proves, case by case: the right key, the right digest,
// the right name.
func TestSigstoreVerification(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	ref := w.encrypt(t, plainImage(t, "good"), "team/app:enc", "default/image_key/app", false)
	key, pub := ecKey(t)
	_, otherPub := ecKey(t)
	signed, err := imagepolicy.Sign(ctx, ref, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := w.reg + "/team/app:enc"; signed.Identity != want {
		t.Errorf("signed identity %q, want %q", signed.Identity, want)
	}
	check := func(p *imagepolicy.Policy, r transport.Reference) error {
		chk, _ := imagepolicy.New(imagepolicy.WithPolicy(p), imagepolicy.WithRequireSignature(true))
		_, err := chk.Check(ctx, r, v1.Platform{})
		return err
	}
	byDigest, _ := transport.Parse("docker://" + w.reg + "/team/app@" + signed.Digest.String())
	for _, tc := range []struct {
		name string
		p    *imagepolicy.Policy
		ref  transport.Reference
		want string // "" = accepted
	}{
		{"right key", sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact), ref, ""},
		{"by digest", sigstorePolicy(t, w.reg+"/team", pub, imagepolicy.IdentityMatchRepoDigestOrExact), byDigest, ""},
		{"other key", sigstorePolicy(t, w.reg+"/team", otherPub, imagepolicy.IdentityMatchRepoDigestOrExact), ref, "verifies with none"},
		{"identity must be exactRepository elsewhere", func() *imagepolicy.Policy {
			p, _ := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q,
				"signedIdentity": {"type": "exactRepository", "dockerRepository": "reg.example/prod"}}]}`, base64.StdEncoding.EncodeToString(pub))))
			return p
		}(), ref, "is not in reg.example/prod"},
		{"out of scope", sigstorePolicy(t, w.reg+"/elsewhere", pub, imagepolicy.IdentityMatchRepository), ref, "rejects"},
	} {
		err := check(tc.p, tc.ref)
		if (tc.want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, spec.ErrPolicyDenied))) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	// A second signature is appended, the first kept.
	key2, pub2 := ecKey(t)
	if _, err := imagepolicy.Sign(ctx, ref, key2); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{pub, pub2} {
		if err := check(sigstorePolicy(t, w.reg+"/team", p, imagepolicy.IdentityMatchRepository), ref); err != nil {
			t.Errorf("after a second signature: %v", err)
		}
	}
}
