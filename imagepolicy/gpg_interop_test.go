package imagepolicy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// gpgEnv is a private GNUPGHOME with one unprotected signing key.
type gpgEnv struct {
	home  string
	email string
}

func newGPGEnv(t *testing.T) *gpgEnv {
	t.Helper()
	testutil.RequireTool(t, "gpg")
	home, err := os.MkdirTemp("", "gpg") // short: gpg-agent's socket path is length-limited
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o700)
	g := &gpgEnv{home: home, email: "signer@coffer.example"}
	t.Cleanup(func() {
		if p, err := exec.LookPath("gpgconf"); err == nil {
			_ = exec.Command(p, "--homedir", home, "--kill", "all").Run()
		}
		os.RemoveAll(home)
	})
	g.run(t, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Coffer Signer <"+g.email+">", "default", "default", "never")
	return g
}

// run runs a tool with GNUPGHOME set, bounded in time (gpg-agent may hold
// the pipes open after gpg exits: WaitDelay).
func (g *gpgEnv) run(t *testing.T, tool string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, args, err, stderr.String())
	}
	return out
}

// skopeoSign signs the image at ref in place with GPG (skopeo copy
// --sign-by), staging the signature in the lookaside directory look.
func (g *gpgEnv) skopeoSign(t *testing.T, w *world, ref transport.Reference, look string) {
	t.Helper()
	testutil.RequireTool(t, "skopeo")
	rd := filepath.Join(t.TempDir(), "registries.d")
	os.MkdirAll(rd, 0o755)
	cfg := "docker:\n  " + w.reg + ":\n    lookaside-staging: file://" + look + "\n"
	if err := os.WriteFile(filepath.Join(rd, "default.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n := strings.TrimPrefix(ref.String(), "docker://")
	g.run(t, "skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
		"--registries.d", rd, "--sign-by", g.email, "docker://"+n, "docker://"+n)
}

func gpgPolicy(t *testing.T, scope, keyPath string) *imagepolicy.Policy {
	t.Helper()
	p, err := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {%q: [
		{"type": "signedBy", "keyType": "GPGKeys", "keyPath": %q}]}}}`, scope, keyPath)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.LoadKeys(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// Images skopeo signed with GPG (simple signing, lookaside storage) verify
// under a signedBy policy, and the attacks on them are refused.
func TestSkopeoGPGSignedImageRefusesTampering(t *testing.T) {
	w := newWorld(t)
	ref := w.encrypt(t, plainImage(t, "#!/bin/sh\necho good\n"), "team/app:enc", "default/image_key/app", false)
	other := w.encrypt(t, plainImage(t, "#!/bin/sh\necho other\n"), "team/other:enc", "default/image_key/other", false)
	g := newGPGEnv(t)
	dir := t.TempDir()
	look := filepath.Join(dir, "lookaside")
	g.skopeoSign(t, w, ref, look)
	g.skopeoSign(t, w, other, look)
	pub := filepath.Join(dir, "signer.asc")
	if err := os.WriteFile(pub, g.run(t, "gpg", "--armor", "--export", g.email), 0o644); err != nil {
		t.Fatal(err)
	}
	// Signatures are public: an attacker places the other image's next to app's.
	on, _ := transport.DockerName(other)
	od, err := remoteDigest(on)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(look, "team", "other@sha256="+od.Hex, "signature-1")
	dst := filepath.Join(look, "team", "app@sha256="+od.Hex, "signature-1")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if b, err := os.ReadFile(src); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pol := gpgPolicy(t, w.reg+"/team", pub)
	runAttacks(t, w, ref, other, spec.ErrPolicyDenied, signedMention, imagepolicy.WithPolicy(pol), imagepolicy.WithLookaside("file://"+look))

	// A signature by another key, in place of the real one, is refused.
	stranger, _ := openpgp.NewEntity("Stranger", "", "s@evil.example", nil)
	tag, _ := transport.DockerName(ref)
	d, _ := remoteDigest(tag)
	sigFile := filepath.Join(look, "team", "app@sha256="+d.Hex, "signature-1")
	payload, _ := json.Marshal(imagepolicy.NewPayload(tag.Name(), d, imagepolicy.AtomicSignatureType))
	var msg bytes.Buffer
	wc, _ := openpgp.Sign(&msg, stranger, nil, nil)
	wc.Write(payload)
	wc.Close()
	if err := os.WriteFile(sigFile, msg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	chk, _ := imagepolicy.New(imagepolicy.WithPolicy(pol), imagepolicy.WithLookaside(look))
	if _, err := chk.Check(context.Background(), ref, v1.Platform{}); !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("signature by an unknown key: err = %v, want denied (does not verify)", err)
	}
}

func remoteDigest(r name.Reference) (v1.Hash, error) {
	img, err := remote.Image(r)
	if err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}
