package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/internal/testutil"
)

const readmeMarker = "<!-- README flow: e2e/readme_test.go runs the next block exactly as written -->"

// readmeBlock returns the shell block after readmeMarker in README.md.
func readmeBlock(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	state := 0 // 0 before the marker, 1 before the fence, 2 in the block
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case state == 0 && line == readmeMarker:
			state = 1
		case state == 1 && line == "```sh":
			state = 2
		case state == 2 && line == "```":
			return b.String()
		case state == 2:
			b.WriteString(line + "\n")
		}
	}
	t.Fatalf("README.md has no shell block after %q", readmeMarker)
	return ""
}

// cofferOnPath puts a `coffer` that runs this test binary's CLI (TestMain)
// first on PATH for scripts, and returns the PATH value.
func cofferOnPath(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\nexec %q %s \"$@\"\n", self, argCLI)
	if err := os.WriteFile(filepath.Join(bin, "coffer"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin + string(os.PathListSeparator) + os.Getenv("PATH")
}

// The README's broker flow runs exactly as written: in a network namespace
// of its own (so 127.0.0.1:5000 and :8080 are free whatever else runs),
// with the image and the registry the text before it names.
func TestREADMEBrokerFlow(t *testing.T) {
	for _, tool := range []string{"unshare", "ip", "docker-registry", "openssl", "curl", "bash", "base64"} {
		testutil.RequireTool(t, tool)
	}
	testutil.RequireExternal(t, os.Geteuid() == 0, "a network namespace of its own needs root")
	block := readmeBlock(t)
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	reg := fmt.Sprintf("version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:5000}\n", filepath.Join(dir, "registry"))
	if err := os.WriteFile(filepath.Join(dir, "registry.yml"), []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
ip link set lo up
docker-registry serve registry.yml >registry.log 2>&1 &
for i in $(seq 100); do (echo >/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.05; done
` + block
	if err := os.WriteFile(filepath.Join(dir, "flow.sh"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "bash", "flow.sh")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+cofferOnPath(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's broker flow failed: %v\n%s", err, out)
	}
	for _, want := range []string{"pinned docker://127.0.0.1:5000/app:enc at sha256:", "pulled docker://127.0.0.1:5000/app:enc into ./rootfs2", "verified docker://127.0.0.1:5000/app:enc"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rootfs", "secret")); err != nil || !strings.Contains(string(b), "42") {
		t.Errorf("rootfs/secret: %q, %v", b, err)
	}
}
