package shim_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/internal/testutil"
)

// crictl runs crictl against the node's CRI: stdout, and with an error
// stderr too.
func (n *node) crictl(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--runtime-endpoint", "unix://" + n.ctd.Address,
		"--image-endpoint", "unix://" + n.ctd.Address, "--timeout", "300s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return strings.TrimSpace(string(out)), nil
}

// testCrictl drives the coffer runtime as kubelet does,
// through containerd's CRI with crictl: the pull (coffer snapshotter)
// fetches none of the encrypted layers on the host; a pod (runtime
// handler "coffer", host network) runs a container that prints the
// secret only the guest could decrypt, and a second container in the
// same pod (the same guest) serves an exec; a pod whose init-data
// annotation the broker does not know fails its container's start, with
// the broker's reason in the container's status.
func testCrictl(t *testing.T, n *node) {
	crictl := testutil.Crictl(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	must := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := n.crictl(ctx, crictl, args...)
		if err != nil {
			t.Fatalf("crictl %s: %v\n%s\ncontainerd log (tail):\n%s", strings.Join(args, " "), err, out, tail(n.ctd.Log(), 40))
		}
		return out
	}
	before := n.layerGets.Load()
	must(t, "pull", n.image)
	if got := n.layerGets.Load() - before; got != 0 {
		t.Fatalf("crictl pull fetched %d encrypted layer blob(s) on the host; want none (the guest pulls)", got)
	}

	pod := func(t *testing.T, name string, annotations map[string]string) (id, cfg string) {
		logs := t.TempDir()
		cfg = filepath.Join(logs, "pod.json")
		testutil.WriteJSON(t, cfg, map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "uid-" + name, "attempt": 0},
			"log_directory": logs,
			"annotations":   annotations,
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		})
		id = must(t, "runp", "--runtime", "coffer", cfg)
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			n.crictl(cctx, crictl, "stopp", id)
			n.crictl(cctx, crictl, "rmp", "-f", id)
		})
		return id, cfg
	}
	container := func(t *testing.T, podID, podCfg, name string, cmd ...string) string {
		c := filepath.Join(filepath.Dir(podCfg), name+".json")
		testutil.WriteJSON(t, c, map[string]any{"metadata": map[string]any{"name": name}, "image": map[string]any{"image": n.image},
			"command": cmd, "log_path": name + ".log"})
		return must(t, "create", podID, c, podCfg)
	}
	state := func(t *testing.T, id string) string {
		return must(t, "inspect", "-o", "go-template", "--template", "{{.status.state}} {{.status.exitCode}} {{.status.reason}} {{.status.message}}", id)
	}

	t.Run("pod", func(t *testing.T) {
		podID, podCfg := pod(t, "guest-pull", nil)
		app := container(t, podID, podCfg, "app", "/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; exit 0")
		must(t, "start", app)
		var st string
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if st = state(t, app); strings.HasPrefix(st, "CONTAINER_EXITED") {
				break
			}
		}
		if !strings.HasPrefix(st, "CONTAINER_EXITED 0") {
			t.Fatalf("app: %q, want CONTAINER_EXITED 0", st)
		}
		if logs := must(t, "logs", app); !strings.Contains(logs, n.secret) {
			t.Fatalf("app's log %q lacks the secret", logs)
		}
		// A second container of the pod runs in the same guest; exec into it.
		side := container(t, podID, podCfg, "side", "/bin/busybox", "sleep", "600")
		must(t, "start", side)
		if out := must(t, "exec", "-s", side, "/bin/busybox", "cat", "/secret"); !strings.Contains(out, n.secret) {
			t.Fatalf("crictl exec: %q, want the secret", out)
		}
		if got := len(n.guestProcesses()); got == 0 || got > 2 {
			t.Fatalf("%d QEMU/swtpm processes for one pod, want one guest (QEMU and its swtpm)", got)
		}
		must(t, "stop", "--timeout", "5", side)
		must(t, "stopp", podID)
		must(t, "rmp", podID)
		deadline := time.Now().Add(30 * time.Second)
		for len(n.guestProcesses()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("after the pod's removal: %v", n.guestProcesses())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("attestation fails", func(t *testing.T) {
		ann, err := ttrpc.EncodeAnnotation([]byte(initDataTOML("not measured")))
		if err != nil {
			t.Fatal(err)
		}
		podID, podCfg := pod(t, "bad-initdata", map[string]string{ttrpc.AnnotationInitData: ann})
		app := container(t, podID, podCfg, "app", "/bin/busybox", "true")
		if out, err := n.crictl(ctx, crictl, "start", app); err == nil {
			t.Fatalf("crictl start of a pod whose init-data the broker does not know succeeded: %s", out)
		}
		if st := state(t, app); !strings.Contains(st, "PCR 8: init-data digest") {
			t.Fatalf("container status %q, want the broker's reason (PCR 8: init-data digest …)", st)
		}
		// Nothing runs in the refused guest: it is powered off at once.
		if ps := n.guestProcesses(); len(ps) != 0 {
			t.Fatalf("after the refused start, guest processes remain: %v", ps)
		}
	})
}
