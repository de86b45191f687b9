package shim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/runtime/nodecfg"
	"github.com/coffer-dev/coffer/runtime/shim"
	"github.com/coffer-dev/coffer/vm"
)

// node is a containerd node set up for the coffer runtime: a static
// coffer (the shim, through its containerd-shim-coffer-v2 link, and the
// guest's init), a measured guest state whose reference values a broker
// holds, a loopback registry with an encrypted busybox image, the
// guest-pull snapshotter and a containerd with it as a proxy plugin.
type node struct {
	t                              testing.TB
	bin, dir, kbs, admin           string
	reg, image, plain, cfg, secret string
	initData                       string // the init-data TOML the guest was measured with
	layerGets                      *atomic.Int64
	layers                         *sync.Map // digests of the encrypted image's layers
	ctd                            *testutil.Containerd
}

func (n *node) coffer(args ...string) string {
	n.t.Helper()
	out, err := exec.Command(n.bin, args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("coffer %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// initDataTOML is a pod's init-data: its cdh.toml's image policy accepts
// any image; mark makes documents of different digests.
func initDataTOML(mark string) string {
	policy := `{"default":[{"type":"insecureAcceptAnything"}]}`
	return "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n# " + mark + "\n[image]\nimage_security_policy = '" + policy + "'\n'''\n"
}

func newNode(t testing.TB, cri bool) *node {
	testutil.RequireTool(t, "qemu-system-x86_64")
	testutil.RequireTool(t, "swtpm")
	n := &node{t: t, dir: t.TempDir(), secret: "guest-pulled-secret-" + fmt.Sprint(time.Now().UnixNano())}
	kernel := testutil.KernelDir(t)
	// A static coffer: the guest's init is made of it; containerd finds
	// the shim, a link to it, on its PATH.
	bindir := filepath.Join(n.dir, "bin")
	os.Mkdir(bindir, 0o755)
	n.bin = testutil.StaticCoffer(t)
	if err := os.Symlink(n.bin, filepath.Join(bindir, shim.BinaryName)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bindir+":"+os.Getenv("PATH")) // containerd finds the shim on its PATH

	// The guest, measured with the pod's init-data; a broker that holds
	// its reference values and trusts its vTPM's EK CA.
	state := filepath.Join(n.dir, "guest")
	n.initData = filepath.Join(n.dir, "initdata.toml")
	if err := os.WriteFile(n.initData, []byte(initDataTOML("good")), 0o600); err != nil {
		t.Fatal(err)
	}
	refs, err := vm.Measure(t.Context(), vm.WithKernelDir(kernel), vm.WithState(state), vm.WithInit(n.bin), vm.WithInitData(n.initData))
	if err != nil {
		t.Fatal(err)
	}
	n.admin = filepath.Join(n.dir, "admin.key")
	n.coffer("kbs", "keygen-admin", "--out", n.admin)
	n.kbs = kbstest.ServeFiles(t, n.dir, n.admin+".pub", filepath.Join(state, vm.EKCAFile))
	adm := []string{"--url", n.kbs, "--admin-key", n.admin}
	for _, r := range refs {
		if r.Name != vm.RefAKPublic {
			n.coffer(append(append([]string{"kbs", "set-reference-value"}, adm...), r.Name, r.Value)...)
		}
	}
	n.coffer(append([]string{"kbs", "set-resource-policy", "--affirming"}, adm...)...)

	// The registry, counting fetches of the encrypted image's layers.
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret": []byte(n.secret + "\n")}, Compression: "gzip"})
	n.layerGets, n.layers = &atomic.Int64{}, &sync.Map{}
	n.reg = startRegistry(t, n.layerGets, n.layers)
	n.image = n.reg + "/shim/busybox:enc"
	n.plain = n.reg + "/shim/busybox:plain"
	n.push(img, n.plain, false)
	n.push(img, n.image, true)
	r, _ := name.ParseReference(n.image, name.Insecure)
	encImg, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := encImg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		d, _ := l.Digest()
		n.layers.Store(d.String(), true)
	}

	n.cfg = filepath.Join(n.dir, "shim.toml")
	cfg := fmt.Sprintf("kbs = %q\nkernel_dir = %q\nstate_dir = %q\nguest_init = %q\ninit_data = %q\nboot_timeout = \"5m\"\n", n.kbs, kernel, state, n.bin, n.initData)
	if err := os.WriteFile(n.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(n.dir, "sn.sock")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		served <- shim.ServeSnapshotter(ctx, sock, filepath.Join(n.dir, "snapshots"), func() { close(ready) })
	}()
	t.Cleanup(func() { cancel(); <-served })
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("snapshotter: %v", err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshotter socket: %v %v, want mode 0600", fi.Mode(), err)
	}
	if !cri {
		n.ctd = testutil.StartContainerd(t, func(string) string {
			return fmt.Sprintf("[proxy_plugins]\n  [proxy_plugins.%s]\n    type = \"snapshot\"\n    address = %q\n", shim.SnapshotterName, sock)
		})
		return n
	}
	// CRI: the sandbox (pause) image, plain; the runtime handler "coffer"
	// and the snapshotter as `coffer runtime install containerd --cri
	// --shim --guest-pull-default` writes them.
	pause, err := mutate.Config(testutil.BusyboxImage(t), v1.Config{Entrypoint: []string{"/bin/busybox", "sleep", "2147483647"}})
	if err != nil {
		t.Fatal(err)
	}
	n.push(pause, n.reg+"/pause:1", false)
	n.ctd = testutil.StartContainerdCRI(t, func(c *testutil.Containerd) {
		in := nodecfg.Install{Coffer: n.bin, KeysPath: filepath.Join(n.dir, "keys"), ContainerdRoot: c.Root, Socket: c.Address,
			CRI: true, SandboxImage: n.reg + "/pause:1", Mirrors: []string{n.reg},
			Shim: true, GuestPullDefault: true, SnapshotterSocket: sock, ShimConfig: n.cfg}
		if _, err := nodecfg.InstallContainerd(c.Config, in); err != nil {
			t.Fatal(err)
		}
	})
	return n
}

func (n *node) push(img v1.Image, ref string, encrypt bool) {
	if !encrypt {
		r, _ := name.ParseReference(ref, name.Insecure)
		if err := remote.Write(r, img); err != nil {
			n.t.Fatal(err)
		}
		return
	}
	lay := filepath.Join(n.dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err == nil {
		err = p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"}))
	}
	if err != nil {
		n.t.Fatal(err)
	}
	n.coffer("encrypt", "--kbs", n.kbs, "--admin-key", n.admin, "--key-id", "default/image_key/shim", "--insecure", "oci:"+lay+":v1", "docker://"+ref)
}

func startRegistry(t testing.TB, layerGets *atomic.Int64, layers *sync.Map) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.LastIndex(r.URL.Path, "/blobs/"); r.Method == http.MethodGet && i >= 0 {
			if _, ok := layers.Load(r.URL.Path[i+len("/blobs/"):]); ok {
				layerGets.Add(1)
			}
		}
		reg.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// ctr runs ctr against the node's containerd, returning its combined
// output and exit code.
func (n *node) ctr(ctx context.Context, args ...string) (string, int) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", n.ctd.Address, "-n", "default"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		n.t.Fatalf("ctr %v: %v", args, err)
	}
	return out.String(), 0
}

func (n *node) mustCtr(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, code := n.ctr(ctx, args...)
	if code != 0 {
		t.Fatalf("ctr %s: exit %d\n%s\ncontainerd log (tail):\n%s", strings.Join(args, " "), code, out, tail(n.ctd.Log(), 30))
	}
	return out
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// guestProcesses lists the QEMU and swtpm processes of this node's guest
// state.
func (n *node) guestProcesses() []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if (strings.Contains(cl, "qemu-system") || strings.HasPrefix(cl, "swtpm") || strings.Contains(cl, "/swtpm ")) && strings.Contains(cl, n.dir) {
			out = append(out, e.Name()+": "+cl)
		}
	}
	return out
}

// TestGuestPull sets up one node (a CRI containerd with the coffer
// runtime and snapshotter, as `coffer runtime install containerd --cri
// --shim --guest-pull-default` writes them) and drives it with ctr, then
// with crictl as kubelet would.
func TestGuestPull(t *testing.T) {
	n := newNode(t, true)
	t.Run("ctr", func(t *testing.T) { testCtrRun(t, n) })
	t.Run("crictl", func(t *testing.T) { testCrictl(t, n) })
}

// testCtrRun runs containers of an encrypted image through the coffer
// runtime with ctr, as containerd's own client does: `coffer runtime
// pull` records the image and fetches none of its layers; ctr run boots a
// guest that attests, pulls, decrypts and runs the container (its output
// through containerd's FIFOs, its exit status as ctr's); a second
// process is exec'd into a running container; killing its shim leaves no
// QEMU or swtpm behind. (A refused attestation is testCrictl's.)
func testCtrRun(t *testing.T, n *node) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	rt := []string{"--runtime", shim.RuntimeName, "--runtime-config-path", n.cfg, "--snapshotter", shim.SnapshotterName}

	before := n.layerGets.Load()
	if out, err := exec.CommandContext(ctx, n.bin, "runtime", "pull", "--address", n.ctd.Address, "--plain-http", n.image).CombinedOutput(); err != nil {
		t.Fatalf("coffer runtime pull: %v\n%s", err, out)
	}
	if got := n.layerGets.Load() - before; got != 0 {
		t.Fatalf("the host fetched %d layer blob(s) of the encrypted image; want none (the guest pulls)", got)
	}
	if out := n.mustCtr(ctx, t, "image", "ls", "-q"); !strings.Contains(out, n.image) {
		t.Fatalf("ctr image ls: %q lacks %s", out, n.image)
	}

	t.Run("run", func(t *testing.T) {
		out, code := n.ctr(ctx, append(append([]string{"run"}, rt...), n.image, "c1",
			"/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; echo on-stderr >&2; exit 7")...)
		if code != 7 || !strings.Contains(out, n.secret) || !strings.Contains(out, "on-stderr") {
			t.Fatalf("ctr run: exit %d, want 7 with the secret and stderr\n%s\ncontainerd log:\n%s", code, out, tail(n.ctd.Log(), 40))
		}
		n.mustCtr(ctx, t, "container", "rm", "c1")
		if ps := n.guestProcesses(); len(ps) != 0 {
			t.Fatalf("after the container ended, guest processes remain: %v", ps)
		}
	})

	t.Run("exec, then the shim killed", func(t *testing.T) {
		n.mustCtr(ctx, t, append(append([]string{"run", "-d"}, rt...), n.image, "c2", "/bin/busybox", "sleep", "600")...)
		out, code := n.ctr(ctx, "task", "exec", "--exec-id", "e1", "c2", "/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; exit 3")
		if code != 3 || !strings.Contains(out, n.secret) {
			t.Fatalf("ctr task exec: exit %d, want 3 with the secret\n%s", code, out)
		}
		st := n.mustCtr(ctx, t, "task", "ls")
		if !strings.Contains(st, "c2") || !strings.Contains(st, "RUNNING") {
			t.Fatalf("ctr task ls: %s, want c2 RUNNING", st)
		}
		if ps := n.guestProcesses(); len(ps) == 0 {
			t.Fatal("no QEMU runs for c2")
		}
		// SIGKILL the shim: its guest (QEMU, and swtpm with it) goes too.
		killed := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if strings.HasPrefix(string(b), shim.BinaryName+"\x00") && strings.Contains(string(b), n.ctd.Address) {
				var pid int
				fmt.Sscan(e.Name(), &pid)
				if err := syscallKill(pid); err == nil {
					killed++
				}
			}
		}
		if killed == 0 {
			t.Fatal("found no coffer shim to kill")
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(n.guestProcesses()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("30 s after the shim was killed: %v", n.guestProcesses())
			}
			time.Sleep(100 * time.Millisecond)
		}
		n.ctr(ctx, "task", "rm", "-f", "c2")
		n.ctr(ctx, "container", "rm", "c2")
	})
}
