package main

// Attacks on sigstore bundle verification (issue 24, cosign v3 format): a
// registry (in-process, 127.0.0.1) serves an image the owner signed with
// `coffer sign --bundle`; the trusted side runs `coffer verify --policy`.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func init() { register(e24bundleSwap) }

// writeECKey writes a PEM EC private key and returns the PEM public key.
func writeECKey(path string) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// e24bundleSwap: the registry (1) replaces team/app:v1 and attaches a
// bundle it signed itself, and (2) serves the owner's other image
// team/other:v1 under team/app:v1 with the owner's genuine bundle copied
// along. Both must be refused (exit 5); the genuine image must verify.
func e24bundleSwap(e *env) result {
	r := result{id: "S24", name: "sigstore bundle swap / own key"}
	fail := func(f string, a ...any) result { r.observed = fmt.Sprintf(f, a...); return r }
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true)))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := filepath.Join(e.dir, "s24")
	os.MkdirAll(dir, 0o700)
	owner, err := writeECKey(filepath.Join(dir, "owner.key"))
	if err != nil {
		return fail("%v", err)
	}
	if _, err := writeECKey(filepath.Join(dir, "evil.key")); err != nil {
		return fail("%v", err)
	}
	push := func(repo string) error {
		img, _ := random.Image(512, 2)
		ref, err := name.ParseReference(host + "/" + repo)
		if err != nil {
			return err
		}
		return remote.Write(ref, img)
	}
	for _, repo := range []string{"team/app:v1", "team/other:v1"} {
		if err := push(repo); err != nil {
			return fail("push: %v", err)
		}
		if out, err := e.cmd(time.Minute, "sign", "--bundle", "--key", filepath.Join(dir, "owner.key"), "docker://"+host+"/"+repo); err != nil {
			return fail("owner's sign --bundle: %v: %s", err, out)
		}
	}
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [{"type": "sigstoreSigned", "keyData": %q}]}}}`,
		host+"/team", base64.StdEncoding.EncodeToString(owner))), 0o600)
	verify := func() (string, error) {
		return e.cmd(time.Minute, "verify", "--policy", policy, "docker://"+host+"/team/app:v1")
	}
	if out, err := verify(); err != nil {
		return fail("the genuine image does not verify: %v: %s", err, out)
	}
	// (1) Replaced, with the registry's own bundle.
	if err := push("team/app:v1"); err != nil {
		return fail("push: %v", err)
	}
	if out, err := e.cmd(time.Minute, "sign", "--bundle", "--key", filepath.Join(dir, "evil.key"), "docker://"+host+"/team/app:v1"); err != nil {
		return fail("evil sign: %v: %s", err, out)
	}
	_, err1 := verify()
	// (2) The owner's other image, its genuine bundle referrer copied along.
	oref, _ := name.ParseReference(host + "/team/other:v1")
	oimg, err := remote.Image(oref)
	if err != nil {
		return fail("%v", err)
	}
	od, _ := oimg.Digest()
	idx, err := remote.Referrers(oref.Context().Digest(od.String()))
	if err != nil {
		return fail("referrers: %v", err)
	}
	im, _ := idx.IndexManifest()
	app, _ := name.ParseReference(host + "/team/app:v1")
	if err := remote.Write(app, oimg); err != nil {
		return fail("%v", err)
	}
	for _, d := range im.Manifests {
		bimg, err := remote.Image(oref.Context().Digest(d.Digest.String()))
		if err == nil {
			err = remote.Write(app.Context().Digest(d.Digest.String()), bimg)
		}
		if err != nil {
			return fail("copying the bundle: %v", err)
		}
	}
	out2, err2 := verify()
	r.ok = exitCode(err1) == 5 && exitCode(err2) == 5 && strings.Contains(out2, "does not match")
	r.observed = fmt.Sprintf("own-key bundle: exit %d; owner's bundle of team/other under team/app: exit %d (%s)",
		exitCode(err1), exitCode(err2), trunc(lastLine(out2), 200))
	return r
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
