package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/vm/console"
)

// ExecArg is the first argument of the child coffer the guest starts
// inside the container's namespaces (see Exec).
const ExecArg = "__coffer-guest-exec"

// runContainer runs the image's entrypoint and CMD (cmd replaces CMD)
// in new mount, PID, UTS and IPC namespaces, its output streamed to the
// console; it returns the exit status (128+N for a signal).
func runContainer(ctx context.Context, rootfs string, cmd []string, c *console.Writer) (int, error) {
	argv, env, wd, err := imageProcess(rootfs, cmd)
	if err != nil {
		return 0, err
	}
	p, err := startInit(ctx, rootfs, wd, argv, env, c.Stream(console.Stdout), c.Stream(console.Stderr))
	if err != nil {
		return 0, err
	}
	c.Send(console.Mark, []byte("started"))
	return waitStatus(p)
}

// imageProcess reads the image config PullImage and pull.Pull write
// beside rootfs (rootfs.config.json) and returns what it runs: its
// entrypoint followed by cmd (or its CMD when cmd is empty), its
// environment and working directory.
func imageProcess(rootfs string, cmd []string) (argv, env []string, wd string, err error) {
	raw, err := readBounded(rootfs+".config.json", 4<<20)
	if err != nil {
		return nil, nil, "", fmt.Errorf("image config: %w", err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, nil, "", fmt.Errorf("image config: %v: %w", err, spec.ErrUnsupported)
	}
	argv = append([]string{}, cf.Config.Entrypoint...)
	if len(cmd) > 0 {
		argv = append(argv, cmd...)
	} else {
		argv = append(argv, cf.Config.Cmd...)
	}
	if len(argv) == 0 {
		return nil, nil, "", fmt.Errorf("the image has no entrypoint or CMD and none was given: %w", spec.ErrUnsupported)
	}
	wd = cf.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	env = cf.Config.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	return argv, env, wd, nil
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// startInit starts argv as the first process of a container on rootfs,
// in new mount, PID, UTS and IPC namespaces (through coffer's ExecArg
// child, see Exec); ctx's end kills it.
func startInit(ctx context.Context, rootfs, wd string, argv, env []string, stdout, stderr io.Writer) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := exec.CommandContext(ctx, self, append([]string{ExecArg, rootfs, wd}, argv...)...)
	p.Env = env
	p.Stdout, p.Stderr = stdout, stderr
	p.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC}
	// The child's fd 3 is the write end of a pipe it makes close-on-exec:
	// its end (EOF here) says the child is in its root and has executed
	// argv (or failed), so that the caller may join it (ExecProcess).
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	p.ExtraFiles = []*os.File{wr}
	err = p.Start()
	wr.Close()
	if err != nil {
		return nil, fmt.Errorf("starting the container: %w", err)
	}
	rd.SetReadDeadline(time.Now().Add(execReadyTimeout))
	io.Copy(io.Discard, io.LimitReader(rd, 1))
	return p, nil
}

// execReadyTimeout bounds the wait for a container's first process to
// execute.
const execReadyTimeout = 10 * time.Second

// waitStatus waits for p and returns its exit status (128+N for signal N).
func waitStatus(p *exec.Cmd) (int, error) {
	err := p.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// Exec is the container's PID 1 before it becomes the container's
// process: in the namespaces runContainer made, it mounts /proc and /dev
// inside rootfs, makes rootfs the root and executes argv. Arguments:
// ROOTFS WORKDIR ARGV...
func Exec(args []string) int {
	if err := execContainer(args); err != nil {
		fmt.Fprintln(os.Stderr, "coffer guest:", err)
		return 127
	}
	return 0
}

func execContainer(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: ROOTFS WORKDIR ARGV...")
	}
	rootfs, wd, argv := args[0], args[1], args[2:]
	unix.CloseOnExec(3) // startInit's ready pipe, closed by the exec below
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	for _, m := range []struct{ src, dst, fs string }{{"proc", "proc", "proc"}, {"devtmpfs", "dev", "devtmpfs"}, {"tmpfs", "tmp", "tmpfs"}} {
		dst := filepath.Join(rootfs, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, dst, m.fs, unix.MS_NOSUID, ""); err != nil {
			return fmt.Errorf("mounting %s in the container: %w", m.fs, err)
		}
	}
	if err := unix.Chroot(rootfs); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir(wd); err != nil {
		return fmt.Errorf("working directory %s: %w", wd, err)
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		lp, err := exec.LookPath(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		path = lp
	}
	return unix.Exec(path, argv, os.Environ())
}
