package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
)

// startBroker runs `coffer kbs serve` (filesystem repository) in-process on
// a free loopback port until the test ends.
func startBroker(t *testing.T, adminPub string, extra ...string) string {
	t.Helper()
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := cli.NewRoot()
		root.SetArgs(append([]string{"kbs", "serve", "--listen", addr, "--repository", filepath.Join(t.TempDir(), "repo"),
			"--admin-public-key", adminPub, "--allow-sample-tee"}, extra...))
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("kbs serve: %v", err)
		}
	})
	testutil.WaitListening(t, addr)
	return "http://" + addr
}

// The seed flow of issue 4 against Debian's docker-registry: encrypt with a
// broker-held key, push, pull with sample attestation; then deny and wrong tee.
func TestAttestedPullThroughDockerRegistry(t *testing.T) {
	reg := testutil.StartDockerRegistry(t)
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.key")
	mustCoffer(t, "kbs", "keygen-admin", "--out", admin)
	kbs := startBroker(t, admin+".pub")
	adm := []string{"--url", kbs, "--admin-key", admin}

	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	image := "docker://" + reg + "/coffer/app:enc"
	mustCoffer(t, "encrypt", "--kbs", kbs, "--admin-key", admin, "--key-id", "default/image_key/app",
		"oci:"+filepath.Join(dir, "app")+":v1", image)
	// The repository holds the KEK where trustee's layout puts it, 0600.
	out := mustCoffer(t, "inspect", image)
	if !strings.Contains(out, "kid kbs:///default/image_key/app") {
		t.Fatalf("inspect:\n%s", out)
	}
	mustCoffer(t, append([]string{"kbs", "set-resource-policy", "--allow-all"}, adm...)...)

	rootfs := filepath.Join(dir, "rootfs")
	mustCoffer(t, "pull", "--kbs", kbs, "--tee", "sample", image, rootfs)
	got, err := os.ReadFile(filepath.Join(rootfs, "secret"))
	if err != nil || strings.TrimSpace(string(got)) != demo.Secret {
		t.Fatalf("rootfs/secret = %q, %v", got, err)
	}
	if _, err := os.Stat(rootfs + ".config.json"); err != nil {
		t.Errorf("image config not written: %v", err)
	}

	// Wrong tee: the broker has no verifier for it.
	_, _, err = coffer(t, "pull", "--kbs", kbs, "--tee", "snp", image, filepath.Join(dir, "rootfs-snp"))
	if err == nil {
		t.Error("pull as an unsupported tee succeeded")
	}
	if _, serr := os.Stat(filepath.Join(dir, "rootfs-snp")); serr == nil {
		t.Error("failed pull left a rootfs")
	}

	// Deny: a clean failure naming the policy, nothing left behind.
	mustCoffer(t, append([]string{"kbs", "set-resource-policy", "--deny-all"}, adm...)...)
	denied := filepath.Join(dir, "rootfs-denied")
	_, _, err = coffer(t, "pull", "--kbs", kbs, "--tee", "sample", image, denied)
	if !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), "denied") || strings.Contains(err.Error(), "\n") {
		t.Errorf("denied pull: err = %v, want one line wrapping ErrPolicyDenied", err)
	}
	if _, serr := os.Stat(denied); serr == nil {
		t.Error("denied pull left a rootfs")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".coffer-*")); len(left) != 0 {
		t.Errorf("staging left behind: %v", left)
	}

	// Broker unreachable: one clear line.
	_, _, err = coffer(t, "pull", "--kbs", "http://127.0.0.1:1", "--tee", "sample", image, filepath.Join(dir, "rootfs-x"))
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("unreachable broker: err = %v", err)
	}
}
