package ctddecoder_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/keygen"
	"github.com/coffer-dev/coffer/runtime/ctddecoder"
	"github.com/coffer-dev/coffer/runtime/nodecfg"
)

// criNode is containerd with its CRI plugin configured by `coffer runtime
// install containerd --cri --per-image-keys` (the library call behind it),
// a loopback registry and crictl.
type criNode struct {
	*testutil.Containerd
	crictl, cfg, keys, registry string
}

// run returns crictl's stdout, and with an error its stderr too.
func (n criNode) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.crictl, append([]string{"--config", n.cfg}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

func (n criNode) must(t testing.TB, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := n.run(ctx, args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s\ncontainerd log tail:\n%s", strings.Join(args, " "), err, out, tail(n.Log(), 3000))
	}
	return strings.TrimSpace(out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func push(t testing.TB, img v1.Image, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

// The Kubernetes node-key model, as kubelet drives it: crictl pulls
// coffer-encrypted images through containerd's CRI plugin (key_model
// "node", coffer ctd-decoder as stream processor) from a loopback registry,
// runs a host-network pod (runc) whose container prints the encrypted
// layer's secret; a node without the key fails the pull with coffer's
// message; per-image keys (every CRI pull is in namespace k8s.io) serve
// only references under their prefix; per-namespace keys (k8s.io) still
// apply beside them.
func TestCRIPullsAndRunsCofferEncrypted(t *testing.T) {
	crictl := testutil.Crictl(t)
	coffer := testutil.BuildCoffer(t)
	testutil.RequireTool(t, "containerd")
	_, err := os.Stat("/usr/lib/cni/loopback")
	testutil.RequireExternal(t, err == nil, "Debian's CNI plugins are not installed (/usr/lib/cni): apt-get install containernetworking-plugins")
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")

	keys := t.TempDir()
	teamA := filepath.Join(keys, ctddecoder.ByImageDir, host, "team-a")
	os.MkdirAll(teamA, 0o700)
	pubA := ecKey(t, teamA, "team-a.pem")
	pubShared := ecKey(t, keys, "node.pem")
	stranger := ecKey(t, "", "stranger.pem")
	// Per-namespace keys keep working under CRI: its namespace is k8s.io.
	k8sDir := filepath.Join(keys, "k8s.io")
	os.Mkdir(k8sDir, 0o700)
	pubK8s := ecKey(t, k8sDir, "k8s.pem")

	c := testutil.StartContainerdCRI(t, func(c *testutil.Containerd) {
		cniConfig(t, filepath.Join(c.Dir, "cni"), fmt.Sprintf("coffer%d", os.Getpid()%100000))
		in := nodecfg.Install{Coffer: coffer, KeysPath: keys, ContainerdRoot: c.Root, Socket: c.Address,
			CRI: true, PerImage: true, PerNamespace: true, SandboxImage: host + "/pause:1", Mirrors: []string{host}}
		if _, err := nodecfg.InstallContainerd(c.Config, in); err != nil {
			t.Fatal(err)
		}
	})
	n := criNode{Containerd: c, crictl: crictl, keys: keys, registry: host, cfg: filepath.Join(c.Dir, "crictl.yaml")}
	os.WriteFile(n.cfg, []byte("runtime-endpoint: unix://"+c.Address+"\nimage-endpoint: unix://"+c.Address+"\ntimeout: 60\n"), 0o600)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// A busybox-based sandbox image, plain, in the registry.
	pause, err := mutate.Config(testutil.BusyboxImage(t), v1.Config{Entrypoint: []string{"/bin/busybox", "sleep", "2147483647"}})
	if err != nil {
		t.Fatal(err)
	}
	push(t, pause, host+"/pause:1")
	secretImage := func(secret, pub string) v1.Image {
		img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret.txt": []byte(secret + "\n")}, Compression: "gzip"})
		return encrypted(t, img, pub, -1)
	}
	push(t, secretImage("team-a secret", pubA), host+"/team-a/app:1")
	push(t, secretImage("a stranger's secret", stranger), host+"/team-b/app:1")
	// team-a's second image, copied by someone into team-b's repository.
	appTwo := secretImage("team-a second secret", pubA)
	push(t, appTwo, host+"/team-b/stolen:1")
	push(t, appTwo, host+"/team-a/app2:1")
	push(t, secretImage("shared secret", pubShared), host+"/team-b/shared:1")
	push(t, secretImage("k8s.io namespace secret", pubK8s), host+"/team-b/ns:1")
	// A post-quantum node key (ML-KEM-768) in the shared key directory.
	pq, err := keygen.Generate(ctx, keygen.MLKEM768)
	if err != nil {
		t.Fatal(err)
	}
	pqPub := filepath.Join(t.TempDir(), "pq.jwk.pub")
	if err := pq.Write(filepath.Join(keys, "pq.jwk"), pqPub); err != nil {
		t.Fatal(err)
	}
	push(t, secretImage("post-quantum secret", "mlkem:"+pqPub), host+"/team-b/pq:1")

	// team-a's image, pulled and run as kubelet would.
	n.must(t, ctx, "pull", host+"/team-a/app:1")
	// A host-network pod, and one in its own network namespace wired by
	// Debian's CNI bridge and host-local plugins.
	if out, _, _ := n.runPod(t, ctx, "host-pod", true, host+"/team-a/app:1", "/bin/busybox", "cat", "/secret.txt"); out != "team-a secret" {
		t.Errorf("host-network pod printed %q, want the encrypted layer's secret", out)
	}
	out, ip, _ := n.runPod(t, ctx, "cni-pod", false, host+"/team-a/app:1", "/bin/busybox", "cat", "/secret.txt")
	if out != "team-a secret" {
		t.Errorf("CNI pod printed %q, want the encrypted layer's secret", out)
	}
	if !strings.HasPrefix(ip, criSubnetPrefix) {
		t.Errorf("CNI pod IP %q, want one of the bridge's %s0/24", ip, criSubnetPrefix)
	}

	// No key on the node: the pull fails with coffer's message.
	if out, err := n.run(ctx, "pull", host+"/team-b/app:1"); err == nil || !strings.Contains(out, "coffer: no key available to the decoder opens this layer") {
		t.Errorf("pull of an image for a key the node lacks: %v\n%s\nwant a failure with coffer's no-key message", err, out)
	} else {
		t.Logf("refused as expected: %s", strings.TrimSpace(out))
	}
	// team-a's image under team-b's prefix: team-a's keys do not serve it.
	if out, err := n.run(ctx, "pull", host+"/team-b/stolen:1"); err == nil || !strings.Contains(out, "coffer: no key available") {
		t.Errorf("pull of team-a's image under team-b/: %v\n%s\nwant a refusal", err, out)
	}
	// The same image under team-a's prefix: its key serves it.
	n.must(t, ctx, "pull", host+"/team-a/app2:1")
	// Files directly in the keys path serve every reference.
	n.must(t, ctx, "pull", host+"/team-b/shared:1")
	n.must(t, ctx, "pull", host+"/team-b/pq:1")
	n.must(t, ctx, "pull", host+"/team-b/ns:1")
}

// criSubnetPrefix is the CNI test network (bridge + host-local).
const criSubnetPrefix = "10.88.77."

// cniConfig writes a bridge network for CRI into dir (its conf_dir): a
// bridge of its own name, host-local addresses kept under dir.
func cniConfig(t testing.TB, dir, bridge string) {
	t.Helper()
	testutil.WriteJSON(t, filepath.Join(dir, "10-coffer-test.conflist"), map[string]any{
		"cniVersion": "1.0.0", "name": "coffer-test",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "ipam"),
				"ranges": []any{[]any{map[string]any{"subnet": criSubnetPrefix + "0/24"}}}},
		}},
	})
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
}

// runPod runs a pod (runc, host network or CNI) whose one container runs
// cmd in image, and returns what it printed, the pod's IP and its ID.
func (n criNode) runPod(t testing.TB, ctx context.Context, name string, hostNet bool, image string, cmd ...string) (out, ip, id string) {
	t.Helper()
	logs := t.TempDir()
	pod := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "team-a", "uid": "uid-" + name, "attempt": 0},
		"log_directory": logs,
	}
	if hostNet {
		pod["linux"] = map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}}
	}
	podCfg := filepath.Join(logs, "pod.json")
	testutil.WriteJSON(t, podCfg, pod)
	ctrCfg := filepath.Join(logs, "ctr.json")
	testutil.WriteJSON(t, ctrCfg, map[string]any{
		"metadata": map[string]any{"name": "app"},
		"image":    map[string]any{"image": image},
		"command":  cmd,
		"log_path": "app.log",
	})
	id = n.must(t, ctx, "runp", "--runtime", "runc", podCfg)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.run(cctx, "stopp", id)
		n.run(cctx, "rmp", "-f", id)
	})
	ip = n.must(t, ctx, "inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", id)
	ctr := n.must(t, ctx, "create", id, ctrCfg, podCfg)
	n.must(t, ctx, "start", ctr)
	var st string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st = n.must(t, ctx, "inspect", "-o", "go-template", "--template", "{{.status.state}} {{.status.exitCode}}", ctr); strings.HasPrefix(st, "CONTAINER_EXITED") {
			break
		}
	}
	if st != "CONTAINER_EXITED 0" {
		t.Errorf("%s: container state %q, want CONTAINER_EXITED 0", name, st)
	}
	return n.must(t, ctx, "logs", ctr), ip, id
}
