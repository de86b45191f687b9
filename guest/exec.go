package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

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
	raw, err := readBounded(rootfs+".config.json", 4<<20)
	if err != nil {
		return 0, fmt.Errorf("image config: %w", err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return 0, fmt.Errorf("image config: %v: %w", err, spec.ErrUnsupported)
	}
	argv := append([]string{}, cf.Config.Entrypoint...)
	if len(cmd) > 0 {
		argv = append(argv, cmd...)
	} else {
		argv = append(argv, cf.Config.Cmd...)
	}
	if len(argv) == 0 {
		return 0, fmt.Errorf("the image has no entrypoint or CMD and none was given: %w", spec.ErrUnsupported)
	}
	wd := cf.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	env := cf.Config.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	p := exec.CommandContext(ctx, self, append([]string{ExecArg, rootfs, wd}, argv...)...)
	p.Env = env
	p.Stdout, p.Stderr = c.Stream(console.Stdout), c.Stream(console.Stderr)
	p.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC}
	if err := p.Start(); err != nil {
		return 0, fmt.Errorf("starting the container: %w", err)
	}
	c.Send(console.Mark, []byte("started"))
	err = p.Wait()
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
