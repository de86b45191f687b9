package testutil

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// RemoveBuilds removes what BuildCoffer and StaticCoffer built; call it
// from TestMain after m.Run.
func RemoveBuilds() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if staticDir != "" {
		os.RemoveAll(staticDir)
	}
}

// StaticCoffer returns a static coffer (CGO_ENABLED=0, stripped), as coffer
// vm's guests need it (their initramfs is made of it): the binary named by
// $COFFER_TEST_STATIC_COFFER when set (.ci/run builds one before the tests,
// so every package that boots guests shares that one build), else one
// built once per test process.
func StaticCoffer(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("COFFER_TEST_STATIC_COFFER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("COFFER_TEST_STATIC_COFFER: %v", err)
		}
		return p
	}
	staticOnce.Do(func() {
		staticDir, staticErr = os.MkdirTemp("", "coffer-static-")
		if staticErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", filepath.Join(staticDir, "coffer"), "github.com/coffer-dev/coffer/cmd/coffer")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("go build (static): %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return filepath.Join(staticDir, "coffer")
}

var (
	staticOnce sync.Once
	staticDir  string
	staticErr  error
)

// BuildCoffer builds the coffer binary once per test process and returns
// its path (for daemons that exec it, like containerd's stream processors).
func BuildCoffer(t testing.TB) string {
	t.Helper()
	if os.Getenv("COFFER_TEST_STATIC_COFFER") != "" {
		return StaticCoffer(t) // .ci/run's one build serves these daemons too
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "coffer-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "coffer"), "github.com/coffer-dev/coffer/cmd/coffer")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "coffer")
}

// Containerd is a containerd daemon started by a test under its own temp
// root, state and socket.
type Containerd struct {
	Dir, Root, State, Address, Config string
	cmd                               *exec.Cmd
	log                               string
}

// StartContainerd runs Debian's containerd with a config made of the
// base settings (root, state, socket, no CRI) plus the TOML extra returns
// for the daemon's root directory (stream processors). It skips (or fails under COFFER_REQUIRE_EXTERNAL=1) without
// containerd, ctr, runc and root. Cleanup stops it and unmounts whatever it
// left mounted under its directories.
func StartContainerd(t testing.TB, extra func(root string) string) *Containerd {
	t.Helper()
	return startContainerd(t, false, extra, nil)
}

// StartContainerdCRI is StartContainerd with containerd's CRI plugin on
// (what kubelet and crictl talk to): its stream server on a free loopback
// port, Debian's CNI plugins (containernetworking-plugins) with a conf dir
// of its own. install edits the config file (c.Config) before the daemon
// starts: tests run `coffer runtime install containerd --cri` on it.
func StartContainerdCRI(t testing.TB, install func(c *Containerd)) *Containerd {
	t.Helper()
	return startContainerd(t, true, func(string) string { return "" }, install)
}

func startContainerd(t testing.TB, cri bool, extra func(root string) string, install func(*Containerd)) *Containerd {
	t.Helper()
	RequireTool(t, "containerd")
	RequireTool(t, "ctr")
	RequireTool(t, "runc")
	RequireTool(t, "containerd-shim-runc-v2")
	RequireExternal(t, os.Geteuid() == 0, "containerd needs root")
	// A short path: the socket name must fit sun_path (108 bytes).
	dir, err := os.MkdirTemp("", "ctd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"), Address: filepath.Join(dir, "c.sock")}
	c.Config = filepath.Join(dir, "config.toml")
	disabled, criCfg := `"io.containerd.grpc.v1.cri", `, ""
	if cri {
		cniConf := filepath.Join(dir, "cni")
		if err := os.Mkdir(cniConf, 0o700); err != nil {
			t.Fatal(err)
		}
		_, port, _ := strings.Cut(FreeAddr(t), ":")
		disabled = ""
		criCfg = fmt.Sprintf(`[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = %q
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = %q
`, port, cniConf)
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [`+disabled+`"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, c.Root, c.State, c.Address, c.Address+".ttrpc") + criCfg + extra(c.Root)
	if err := os.WriteFile(c.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if install != nil {
		install(c)
	}
	c.log = filepath.Join(dir, "containerd.log")
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", "--config", c.Config)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	t.Cleanup(c.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(c.Address); err == nil {
			if out, err := exec.Command("ctr", "-a", c.Address, "version").CombinedOutput(); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("containerd did not answer: %s\n%s", out, c.Log())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not start:\n%s", c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// Log returns the daemon's output so far.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// Ctr runs ctr against this daemon in namespace ns. `ctr run` gets the
// runc shim and runc's path explicitly: a node with crun installed may
// otherwise pick a runtime that refuses this machine's hybrid cgroups.
func (c *Containerd) Ctr(ctx context.Context, ns string, args ...string) (string, error) {
	if len(args) > 0 && args[0] == "run" {
		runc, err := exec.LookPath("runc")
		if err != nil {
			return "", fmt.Errorf("ctr run: %w", err)
		}
		args = append([]string{"run", "--runtime", "io.containerd.runc.v2", "--runc-binary", runc}, args[1:]...)
	}
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.Address, "-n", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *Containerd) stop() {
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
	}
	// Shims are children of init once started; stop any left for our
	// state dir, then unmount what is left under our directory.
	killShims(c.Address)
	for _, m := range mountsUnder(c.Dir) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	os.RemoveAll(c.Dir)
}

// killShims stops the runc and coffer shims started for address.
func killShims(address string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && (strings.HasSuffix(args[0], "containerd-shim-runc-v2") || strings.HasSuffix(args[0], "containerd-shim-coffer-v2")) && strings.Contains(string(b), address) {
			var pid int
			if _, err := fmt.Sscan(e.Name(), &pid); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
