package ttrpc_test

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	cofferttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/transport"
)

// PullImage of a coffer-encrypted (attestation-agent, KEK in the broker)
// and of a skopeo-encrypted busybox image into a bundle that runc runs, as
// kata-agent does after its guest pull.
func TestPullImageBundleRunsWithRunc(t *testing.T) {
	runc := testutil.RequireTool(t, "runc")
	skopeo := testutil.RequireTool(t, "skopeo")
	testutil.RequireExternal(t, os.Geteuid() == 0, "runc run needs root")
	ctx := context.Background()
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	kek := make([]byte, 32)
	rand.Read(kek)
	const kid = "kbs:///default/image_key/app"
	b.SetResource(t, "default/image_key/app", kek)
	dir := t.TempDir()
	kekFile := filepath.Join(dir, "kek")
	os.WriteFile(kekFile, kek, 0o600)
	recipient := "provider:attestation-agent:keypath=" + kekFile + "::keyid=" + kid

	rs := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer rs.Close()
	host := strings.TrimPrefix(rs.URL, "http://")
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte("decrypted in the guest\n")}, Compression: "gzip"})

	// coffer encrypts.
	w, err := recipients.ParseRecipients(ctx, []string{recipient}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := imagecrypt.Encrypt(ctx, imagecrypt.Artifact{Image: img}, w, imagecrypt.WithLayers(-1), imagecrypt.WithTempDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	dst, _ := transport.Parse("docker://" + host + "/app:coffer")
	if err := transport.Write(ctx, dst, transport.Artifact(res.Artifact)); err != nil {
		t.Fatal(err)
	}

	// skopeo encrypts. Debian's skopeo 1.9.3 links an ocicrypt without
	// keyprovider support ("Provided protocol not recognized" for
	// provider:attestation-agent), so it encrypts to a JWE key the agent is
	// given (pull.WithKeys through WithPullOptions), as a node key would be.
	jweKey := keystest.EC(t, elliptic.P256())
	pubFile := keystest.Write(t, dir, "pub.pem", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, &jweKey.PublicKey)))
	src, _ := transport.Parse("oci:" + filepath.Join(dir, "src") + ":v1")
	if err := transport.Write(ctx, src, transport.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(sctx, skopeo, "copy", "-q", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pubFile,
		"oci:"+filepath.Join(dir, "src")+":v1", "docker://"+host+"/app:skopeo")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo: %v\n%s", err, out)
	}
	jweUnwrap, err := jwe.NewUnwrapper(jweKey)
	if err != nil {
		t.Fatal(err)
	}

	u := start(t, b, nil, cofferttrpc.WithPullOptions(pull.WithKeys(jweUnwrap)))
	for _, tag := range []string{"coffer", "skopeo"} {
		bundle := t.TempDir()
		resp, err := u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: host + "/app:" + tag, BundlePath: bundle})
		if err != nil {
			t.Fatalf("%s: PullImage: %v", tag, err)
		}
		if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
			t.Fatalf("runc spec: %v\n%s", err, out)
		}
		specFile := filepath.Join(bundle, "config.json")
		raw, _ := os.ReadFile(specFile)
		var spec map[string]any
		if err := json.Unmarshal(raw, &spec); err != nil {
			t.Fatal(err)
		}
		p := spec["process"].(map[string]any)
		p["terminal"] = false
		p["args"] = []string{"/bin/busybox", "cat", "/secret.txt"}
		raw, _ = json.Marshal(spec)
		os.WriteFile(specFile, raw, 0o600)
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(rctx, runc, "--root", filepath.Join(t.TempDir(), "runc"), "run", "--bundle", bundle, "ttrpc-"+tag+"-"+strings.TrimPrefix(resp.GetManifestDigest(), "sha256:")[:12]).CombinedOutput()
		rcancel()
		if err != nil || string(out) != "decrypted in the guest\n" {
			t.Errorf("%s: runc run: %v, printed %q", tag, err, out)
		}
	}
}
