// Package shim is coffer's containerd runtime, io.containerd.coffer.v2: a
// shim v2 (containerd's own shim library) in which each pod is a coffer
// guest VM. The guest attests to the broker with the pod's init-data
// measured, pulls, decrypts and verifies the pod's images itself (CDH
// PullImage) and runs its containers (kata's AgentService), so the
// host's containerd never holds their keys or plaintext ("guest pull");
// the coffer snapshotter (snapshotter.go) keeps the host from fetching
// the layers at all.
package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/containerd/containerd/namespaces"
	shimlib "github.com/containerd/containerd/runtime/v2/shim"
)

// RuntimeName is the runtime type containerd knows the shim by.
const RuntimeName = "io.containerd.coffer.v2"

// BinaryName is the binary containerd runs for RuntimeName (a link to
// coffer: coffer runs as the shim when called by this name).
const BinaryName = "containerd-shim-coffer-v2"

// Main runs the shim as containerd invokes it (start, delete, or serve);
// it does not return.
func Main() {
	shimlib.Run(RuntimeName, newService)
}

// StartShim starts the shim process that serves a container: the pod's
// sandbox shim for a CRI container (grouped by its sandbox ID), else a
// new one. It returns the shim's socket address.
func (s *service) StartShim(ctx context.Context, opts shimlib.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	grouping := opts.ID
	if ts, err := readSpec(cwd); err == nil && ts.Annotations[AnnotationSandboxID] != "" {
		grouping = ts.Annotations[AnnotationSandboxID]
	}
	address, err := shimlib.SocketAddress(ctx, opts.Address, grouping)
	if err != nil {
		return "", err
	}
	socket, err := shimlib.NewSocket(address)
	if err != nil {
		if !shimlib.SocketEaddrinuse(err) {
			return "", fmt.Errorf("coffer shim: socket: %w", err)
		}
		if shimlib.CanConnect(address) {
			// The pod's shim runs: it serves this container too.
			if err := shimlib.WriteAddress("address", address); err != nil {
				return "", err
			}
			return address, nil
		}
		if err := shimlib.RemoveSocket(address); err != nil {
			return "", err
		}
		if socket, err = shimlib.NewSocket(address); err != nil {
			return "", fmt.Errorf("coffer shim: socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = shimlib.RemoveSocket(address)
		}
	}()
	if err := shimlib.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := exec.Command(self, "-namespace", ns, "-id", opts.ID, "-address", opts.Address)
	cmd.Args[0] = BinaryName // coffer's main runs the shim by this name
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), containerdAddressEnv+"="+opts.Address)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go cmd.Wait()
	return address, nil
}
