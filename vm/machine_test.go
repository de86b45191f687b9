package vm_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/kata"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/vm"
)

// TestMachine boots one agent-mode guest (vm.Start) and, over its
// virtio-serial ttrpc connection: pulls a coffer-encrypted image from a
// registry on the host's loopback (the layer key in a real broker, given
// only to the measured guest) with CDH PullImage; runs it with kata's
// CreateContainer/StartContainer/ReadStdout/ReadStderr/WaitProcess
// (output and exit status checked); execs a second process in it; and
// reconnects. Stop then leaves no QEMU or swtpm behind.
func TestMachine(t *testing.T) {
	testutil.RequireTool(t, "qemu-system-x86_64")
	testutil.RequireTool(t, "swtpm")
	// The init-data's cdh.toml carries the image security policy the
	// guest's CDH enforces: this registry's agent/denied is refused.
	reg := startRegistry(t)
	initData := filepath.Join(t.TempDir(), "init.toml")
	policy := `{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"` + reg + `/agent/denied":[{"type":"reject"}]}}}`
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n[image]\nimage_security_policy = '" + policy + "'\n'''\n"
	os.WriteFile(initData, []byte(doc), 0o600)
	e, state := benchMachine(t, vm.WithInitData(initData))
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret": []byte(secret + "\n")}, Compression: "gzip"})
	image := "docker://" + reg + "/agent/busybox:enc"
	e.push(img, image, true)
	e.push(img, "docker://"+reg+"/agent/denied:enc", false) // plain: the policy refuses it before any key

	var rss float64
	start := time.Now()
	m, err := vm.Start(t.Context(), vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin), vm.WithKBS(e.kbs),
		vm.WithInitData(initData), vm.WithForward(reg), vm.WithTimeout(5*time.Minute), vm.WithStats(func(n string, v float64) {
			if n == "maxrss_kib" {
				rss = v
			}
		}))
	if err != nil {
		t.Fatalf("vm start: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			m.Kill()
		}
	})
	t.Logf("boot to serving: %v", time.Since(start))
	if fi, err := os.Stat(m.Socket()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent socket %s: %v %v, want mode 0600", m.Socket(), fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(m.Socket())); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("agent socket directory: %v %v, want mode 0700", fi.Mode(), err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	conn, err := m.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc := cttrpc.NewClient(conn)
	pulled, err := cdh.NewImagePullServiceClient(tc).PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: strings.TrimPrefix(image, "docker://"), BundlePath: "/run/kata-containers/c1"})
	if err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if !strings.HasPrefix(pulled.ManifestDigest, "sha256:") {
		t.Fatalf("PullImage: manifest digest %q", pulled.ManifestDigest)
	}
	t.Logf("pulled %s (guest coffer maxrss %.1f MiB)", pulled.ManifestDigest, rss/1024)
	if _, err := cdh.NewImagePullServiceClient(tc).PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: reg + "/agent/denied:enc", BundlePath: "/run/kata-containers/c9"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("PullImage of an image the init-data's policy rejects: %v, want PermissionDenied", err)
	}
	// Runtime measurements are on (the vTPM's PCR 23, as each PullImage was).
	if r, err := aa.NewAttestationAgentServiceClient(tc).ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{
		Domain: "test", Operation: "op", Content: "x"}); err != nil || r.Result != aa.RuntimeMeasurementResult_OK {
		t.Fatalf("ExtendRuntimeMeasurement: %v %v, want OK", r, err)
	}
	ag := kata.NewAgentServiceClient(tc)
	_, err = ag.CreateContainer(ctx, &kata.CreateContainerRequest{ContainerId: "c1", ExecId: "c1", OCI: &kata.Spec{
		Process: &kata.Process{Args: []string{"/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; echo on-stderr >&2; /bin/busybox sleep 3; exit 7"}, Cwd: "/"},
	}})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := ag.StartContainer(ctx, &kata.StartContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	// A second process in the running container: it sees the container's
	// root and PID namespace (the init's shell is PID 1 there).
	_, err = ag.ExecProcess(ctx, &kata.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: &kata.Process{
		Args: []string{"busybox", "sh", "-c", "busybox cat /secret; busybox cat /proc/1/cmdline | busybox tr '\\0' ' '; exit 3"}}})
	if err != nil {
		t.Fatalf("ExecProcess: %v", err)
	}
	execOut := readAll(t, ctx, ag, "c1", "e1", false)
	if st, err := ag.WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c1", ExecId: "e1"}); err != nil || st.Status != 3 {
		t.Fatalf("WaitProcess e1: %v %v, want status 3", st, err)
	}
	if !strings.Contains(execOut, secret) || !strings.Contains(execOut, "sh -c /bin/busybox cat /secret") {
		t.Fatalf("exec'd process printed %q: want the secret and the container's PID 1 (its init shell)", execOut)
	}
	out := readAll(t, ctx, ag, "c1", "c1", false)
	errs := readAll(t, ctx, ag, "c1", "c1", true)
	st, err := ag.WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c1", ExecId: "c1"})
	if err != nil || st.Status != 7 || strings.TrimSpace(out) != secret || strings.TrimSpace(errs) != "on-stderr" {
		t.Fatalf("container: status %v %v (want 7), stdout %q (want the secret), stderr %q", st, err, out, errs)
	}
	if _, err := ag.ExecProcess(ctx, &kata.ExecProcessRequest{ContainerId: "c1", ExecId: "e2", Process: &kata.Process{Args: []string{"true"}}}); err == nil {
		t.Fatal("ExecProcess in an ended container succeeded")
	}
	if _, err := ag.CreateContainer(ctx, &kata.CreateContainerRequest{ContainerId: "../x", OCI: &kata.Spec{Process: &kata.Process{Args: []string{"x"}}}}); err == nil {
		t.Fatal("CreateContainer took container_id ../x")
	}
	if _, err := ag.RemoveContainer(ctx, &kata.RemoveContainerRequest{ContainerId: "c1", Timeout: 10}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	tc.Close()

	// The guest serves the next connection after the host's first ends.
	conn, err = m.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc = cttrpc.NewClient(conn)
	if _, err := kata.NewAgentServiceClient(tc).WaitProcess(ctx, &kata.WaitProcessRequest{ContainerId: "c1"}); err == nil || !strings.Contains(err.Error(), "no container c1") {
		t.Fatalf("WaitProcess of a removed container on a second connection: %v, want no container c1", err)
	}
	tc.Close()

	stopped = true
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if left := processesUnder(state); len(left) > 0 {
		t.Fatalf("after Stop, still running: %v", left)
	}
	if _, err := os.Stat(m.Socket()); !os.IsNotExist(err) {
		t.Fatalf("agent socket left behind: %v", err)
	}

	t.Run("coffer vm start", func(t *testing.T) { vmStartCLI(t, e, state, initData) })
}

// vmStartCLI boots the machine again with coffer vm start: the socket
// it prints (--agent-socket) serves the AA, and SIGTERM powers the guest
// off, leaving nothing behind.
func vmStartCLI(t *testing.T, e *env, state, initData string) {
	dir := filepath.Join(t.TempDir(), "sock")
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(e.bin, "vm", "start", "--kernel-dir", e.kernel, "--state", state, "--kbs", e.kbs,
		"--init-data", initData, "--agent-socket", sock)
	stdout, _ := cmd.StdoutPipe()
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		b, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(b)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		if l != sock {
			t.Fatalf("coffer vm start printed %q, want %s; stderr:\n%s", l, sock, errb.String())
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("coffer vm start: no socket within 5 minutes; stderr:\n%s", errb.String())
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory %v %v, want 0700", fi.Mode(), err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tc := cttrpc.NewClient(conn)
	tee, err := aa.NewAttestationAgentServiceClient(tc).GetTeeType(t.Context(), &aa.GetTeeTypeRequest{})
	tc.Close()
	if err != nil || tee.Tee != "tpm" {
		t.Fatalf("GetTeeType through coffer vm start's socket: %v %v, want tpm", tee, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("coffer vm start after SIGTERM: %v\n%s", err, errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("coffer vm start did not end within a minute of SIGTERM")
	}
	if left := processesUnder(state); len(left) > 0 {
		t.Fatalf("after coffer vm start ended, still running: %v", left)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("agent socket left behind: %v", err)
	}
}

// readAll reads a process's stdout (or stderr) to its end (empty data).
func readAll(t *testing.T, ctx context.Context, ag kata.AgentServiceService, cid, eid string, stderr bool) string {
	var b strings.Builder
	for {
		req := &kata.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: 4096}
		var resp *kata.ReadStreamResponse
		var err error
		if stderr {
			resp, err = ag.ReadStderr(ctx, req)
		} else {
			resp, err = ag.ReadStdout(ctx, req)
		}
		if err != nil {
			t.Fatalf("read %s/%s: %v", cid, eid, err)
		}
		if len(resp.Data) == 0 { // the end, as kata-agent says it
			return b.String()
		}
		b.Write(resp.Data)
		if b.Len() > 1<<20 {
			t.Fatalf("read %s/%s: more than 1 MiB", cid, eid)
		}
	}
}

// processesUnder lists the processes whose command line names dir (the
// machine's QEMU and swtpm do).
func processesUnder(dir string) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir) {
			left = append(left, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return left
}
