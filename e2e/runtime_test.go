package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// coffer runtime install containerd, then runtime check, as a node operator
// runs them: the stock Debian config keeps its bytes, a second install is a
// no-op, check finds nothing once a key is in place and one line per
// problem before.
func TestRuntimeInstallAndCheck(t *testing.T) {
	t.Parallel()
	stock, err := os.ReadFile("../runtime/nodecfg/testdata/debian-config.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, keys := filepath.Join(dir, "config.toml"), filepath.Join(dir, "keys")
	os.WriteFile(cfg, stock, 0o644)
	bin := filepath.Join(dir, "coffer")
	os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)

	out, _, err := coffer(t, "runtime", "check", "--containerd-config", cfg)
	if err == nil || strings.Count(out, "\n") != 3 || !strings.Contains(out, "no stream processor accepts") {
		t.Fatalf("check before install: err = %v, output:\n%s", err, out)
	}
	out = mustCoffer(t, "runtime", "install", "containerd", "--config", cfg, "--keys-path", keys, "--coffer", bin)
	if !strings.Contains(out, "restart containerd") {
		t.Errorf("install said %q", out)
	}
	got, _ := os.ReadFile(cfg)
	if !bytes.HasPrefix(got, stock) {
		t.Error("install changed the stock part of the config")
	}
	if st, err := os.Stat(keys); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v %v", st, err)
	}
	if out := mustCoffer(t, "runtime", "install", "containerd", "--config", cfg, "--keys-path", keys, "--coffer", bin); !strings.Contains(out, "nothing to do") {
		t.Errorf("second install said %q", out)
	}
	out, _, err = coffer(t, "runtime", "check", "--containerd-config", cfg)
	if err == nil || !strings.Contains(out, "holds no private key") {
		t.Errorf("check without a key: err = %v, output:\n%s", err, out)
	}
	k := newKeys(t)
	b, _ := os.ReadFile(k.ecPriv)
	os.WriteFile(filepath.Join(keys, "node.pem"), b, 0o600)
	if out := mustCoffer(t, "runtime", "check", "--containerd-config", cfg); !strings.HasPrefix(out, "ok:") {
		t.Errorf("check with a key: %q", out)
	}
	if _, _, err := coffer(t, "runtime", "install", "crio"); err == nil {
		t.Error("install crio succeeded")
	}
}
