package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
	cttrpc "github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/containerd/log"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/kata"
	"github.com/coffer-dev/coffer/vm"
)

// guest is the pod's running guest and the shim's connection to its agent.
type guest struct {
	m     *vm.Machine
	tc    *cttrpc.Client
	agent kata.AgentServiceService
	pull  cdh.ImagePullServiceService
	lock  *os.File // the state directory's lock, held while the guest runs
}

func (s *service) currentGuest() *guest {
	s.guestMu.Lock()
	defer s.guestMu.Unlock()
	return s.guest
}

// ensureGuest boots the pod's guest when none runs: it attests to the
// broker with the pod's init-data measured (PCR 8), so a refusal is the
// broker's reason, returned here.
func (s *service) ensureGuest(ctx context.Context, t *task, image string) (*guest, error) {
	s.guestMu.Lock()
	defer s.guestMu.Unlock()
	if s.guest != nil {
		select {
		case <-s.guest.m.Done():
			return nil, errGuestGone
		default:
			return s.guest, nil
		}
	}
	c := s.config()
	doc, err := initData(t, c)
	if err != nil {
		return nil, err
	}
	lock, err := lockState(ctx, c.StateDir)
	if err != nil {
		return nil, err
	}
	// The guest lives as long as the shim (s.ctx), not as this request.
	bootCtx, cancel := context.WithCancel(s.ctx)
	booted := false
	defer func() {
		if !booted {
			cancel()
			lock.Close()
		}
	}()
	// The agent socket is vm.Start's own (a private directory under the
	// state directory, gone with the machine); run holds the init-data
	// file QEMU reads at its start.
	run, err := os.MkdirTemp("", "coffer-shim-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(run)
	opts := []vm.Option{vm.WithKernelDir(c.KernelDir), vm.WithState(c.StateDir), vm.WithKBS(c.KBS),
		vm.WithTimeout(c.BootTimeout.Duration)}
	if c.MemoryMiB > 0 {
		opts = append(opts, vm.WithMemory(c.MemoryMiB))
	}
	if c.Accel != "" {
		opts = append(opts, vm.WithAccel(c.Accel))
	}
	if c.GuestInit != "" {
		opts = append(opts, vm.WithInit(c.GuestInit))
	}
	for _, a := range c.Forward {
		opts = append(opts, vm.WithForward(a))
	}
	if r := loopbackRegistry(image); r != "" {
		opts = append(opts, vm.WithForward(r))
	}
	if doc != nil {
		f := filepath.Join(run, "initdata.toml")
		if err := os.WriteFile(f, doc, 0o600); err != nil {
			return nil, err
		}
		opts = append(opts, vm.WithInitData(f))
	}
	stop := context.AfterFunc(ctx, cancel) // a start abandoned mid-boot aborts it
	m, err := vm.Start(bootCtx, opts...)
	stop()
	if err != nil {
		return nil, err
	}
	conn, err := m.Dial(ctx)
	if err != nil {
		m.Kill()
		return nil, err
	}
	booted = true
	tc := cttrpc.NewClient(conn)
	s.guest = &guest{m: m, tc: tc, agent: kata.NewAgentServiceClient(tc), pull: cdh.NewImagePullServiceClient(tc), lock: lock}
	go func() {
		<-m.Done()
		cancel()
		s.guestEnded()
	}()
	return s.guest, nil
}

// guestEnded marks every running process of a guest that ended by itself
// as exited (255), so Wait returns.
func (s *service) guestEnded() {
	for _, p := range s.guestProcs() {
		if st, _, _ := p.state(); st == tasktypes.Status_RUNNING {
			s.exit(p, 255)
		}
	}
}

// stopGuest powers the guest off (it stops its containers first).
func (s *service) stopGuest(ctx context.Context) {
	s.guestMu.Lock()
	g := s.guest
	s.guest = nil
	s.guestMu.Unlock()
	if g == nil {
		return
	}
	g.tc.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := g.m.Stop(sctx); err != nil {
		logf(s.ctx, "stopping the guest: %v", err)
	}
	g.lock.Close()
}

// startInGuest runs a container's init (pulling its image into the
// guest first) or an exec'd process, and starts copying its output to
// containerd's FIFOs and waiting for its end.
func (s *service) startInGuest(ctx context.Context, t *task, p *proc) error {
	var g *guest
	var pulled time.Time
	if p.execID == "" {
		image, err := s.imageOf(ctx, t)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if g, err = s.ensureGuest(ctx, t, image); err != nil {
			return err
		}
		t1 := time.Now()
		defer func() {
			// Where a container's start goes (BenchmarkGuestPullStart reads it).
			if pulled.IsZero() {
				return
			}
			t3 := time.Now()
			log.G(s.ctx).Infof("coffer runtime: container %s: boot %.2fs, pull %.2fs, start %.2fs", t.id,
				t1.Sub(t0).Seconds(), pulled.Sub(t1).Seconds(), t3.Sub(pulled).Seconds())
		}()
		if _, err := g.pull.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: image, BundlePath: bundlePath(t.id)}); err != nil {
			return fmt.Errorf("guest pull of %s: %s", image, guestSaid(err))
		}
		pulled = time.Now()
		oci := &kata.Spec{Process: &kata.Process{Args: p.spec.Args, Env: p.spec.Env, Cwd: p.spec.Cwd}}
		if _, err := g.agent.CreateContainer(ctx, &kata.CreateContainerRequest{ContainerId: t.id, ExecId: t.id, OCI: oci}); err != nil {
			return fmt.Errorf("guest create %s: %s", t.id, guestSaid(err))
		}
		if _, err := g.agent.StartContainer(ctx, &kata.StartContainerRequest{ContainerId: t.id}); err != nil {
			return fmt.Errorf("guest start %s: %s", t.id, guestSaid(err))
		}
	} else {
		if g = s.currentGuest(); g == nil {
			return fmt.Errorf("exec %s: container %s is not running", p.execID, t.id)
		}
		kp := &kata.Process{Args: p.spec.Args, Env: p.spec.Env, Cwd: p.spec.Cwd}
		if _, err := g.agent.ExecProcess(ctx, &kata.ExecProcessRequest{ContainerId: t.id, ExecId: p.execID, Process: kp}); err != nil {
			return fmt.Errorf("guest exec %s in %s: %s", p.execID, t.id, guestSaid(err))
		}
	}
	p.mu.Lock()
	p.status = tasktypes.Status_RUNNING
	p.mu.Unlock()
	eid := p.execID
	if eid == "" {
		eid = t.id
	}
	out := g.copyStream(s.ctx, t.id, eid, p.stdout, false)
	errs := g.copyStream(s.ctx, t.id, eid, p.stderr, true)
	go s.wait(p, func() (uint32, error) {
		st, err := g.agent.WaitProcess(s.ctx, &kata.WaitProcessRequest{ContainerId: t.id, ExecId: eid})
		// The output is flushed before the exit is reported: a client
		// that reads until the exit event sees all of it.
		for _, ch := range []<-chan struct{}{out, errs} {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
			}
		}
		if err != nil {
			return 0, err
		}
		return uint32(st.Status), nil
	})
	return nil
}

// copyStream copies a guest process's stdout or stderr to containerd's
// FIFO (or drops it when there is none, so the guest's pipe never fills)
// until the guest reports its end; the returned channel closes then.
func (g *guest) copyStream(ctx context.Context, cid, eid, fifo string, stderr bool) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var w io.Writer = io.Discard
		if fifo != "" {
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err == nil {
				defer f.Close()
				w = f
			}
		}
		req := &kata.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: 32 << 10}
		for {
			var resp *kata.ReadStreamResponse
			var err error
			if stderr {
				resp, err = g.agent.ReadStderr(ctx, req)
			} else {
				resp, err = g.agent.ReadStdout(ctx, req)
			}
			if err != nil || len(resp.Data) == 0 {
				return
			}
			if len(resp.Data) > int(req.Len) { // the guest's answer is bounded by the ask
				return
			}
			if _, err := w.Write(resp.Data); err != nil {
				w = io.Discard
			}
		}
	}()
	return done
}

func (g *guest) signal(ctx context.Context, p *proc, sig uint32) error {
	eid := p.execID
	if eid == "" {
		eid = p.cid
	}
	_, err := g.agent.SignalProcess(ctx, &kata.SignalProcessRequest{ContainerId: p.cid, ExecId: eid, Signal: sig})
	return err
}

func (g *guest) remove(ctx context.Context, cid string) {
	_, _ = g.agent.RemoveContainer(ctx, &kata.RemoveContainerRequest{ContainerId: cid, Timeout: 10})
}

// lockState takes the state directory's lock: its vTPM serves one guest
// at a time, so a second pod's guest waits for the first to end.
func lockState(ctx context.Context, dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".coffer-shim.lock"), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the guest state %s (another pod's guest holds it): %w", dir, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
