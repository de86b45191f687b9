package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/kata"
)

// Paths and bounds of the container service.
const (
	// BundleRoot is where the host's PullImage bundles go (kata-agent's
	// CONTAINER_BASE): PullImage of bundle_path BundleRoot/ID creates that
	// directory, and a container whose spec names no root runs
	// BundleRoot/ID/rootfs.
	BundleRoot = "/run/kata-containers"

	maxContainers = 32
	maxProcesses  = 64 // per container, the init included
	maxArgs       = 1024
	maxArgBytes   = 256 << 10 // args and env together
	maxRead       = 1 << 20   // ReadStdout/ReadStderr's len is clamped to this
	defaultRead   = 32 << 10
)

// ids are container and exec IDs (kata's are hex; docker's, names).
var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// containers serves kata's grpc.AgentService subset: containers on the
// bundles PullImage unpacked, run with the same namespaces-and-chroot
// runner as run mode (startInit); exec'd processes join the init's PID,
// UTS and IPC namespaces and its root.
type containers struct {
	ctx context.Context // the agent's life: its end kills every process

	mu sync.Mutex
	cs map[string]*container
}

type container struct {
	id, rootfs string
	initExec   string
	init       procSpec
	procs      map[string]*process // by exec ID
	started    bool
}

type procSpec struct {
	argv, env []string
	cwd       string
}

type process struct {
	cmd            *exec.Cmd
	stdout, stderr *stream
	done           chan struct{} // closed when it has been reaped
	status         int
}

// stream is the read end of a process's stdout or stderr pipe.
type stream struct {
	mu sync.Mutex // one reader at a time
	f  *os.File
}

func newContainers(ctx context.Context) *containers {
	return &containers{ctx: ctx, cs: map[string]*container{}}
}

func rpcErr(code codes.Code, format string, a ...any) error {
	return status.Errorf(code, "[AGENT] [ERROR]: "+format, a...)
}

func checkID(what, id string) error {
	if !idRE.MatchString(id) {
		return rpcErr(codes.InvalidArgument, "%s %q: want 1 to 128 of [A-Za-z0-9_.-], starting alphanumeric", what, id)
	}
	return nil
}

// checkProcess validates a process spec's bounds and returns it.
func checkProcess(p *kata.Process) (procSpec, error) {
	if p == nil {
		return procSpec{}, rpcErr(codes.InvalidArgument, "no process")
	}
	if p.Terminal {
		return procSpec{}, rpcErr(codes.Unimplemented, "terminals are not supported")
	}
	if len(p.Args) > maxArgs || len(p.Env) > maxArgs {
		return procSpec{}, rpcErr(codes.InvalidArgument, "more than %d args or env entries", maxArgs)
	}
	n := len(p.Cwd)
	for _, s := range append(append([]string{}, p.Args...), p.Env...) {
		n += len(s)
		if strings.IndexByte(s, 0) >= 0 {
			return procSpec{}, rpcErr(codes.InvalidArgument, "a NUL byte in args or env")
		}
	}
	if n > maxArgBytes {
		return procSpec{}, rpcErr(codes.InvalidArgument, "args, env and cwd of %d bytes (at most %d)", n, maxArgBytes)
	}
	for _, e := range p.Env {
		if !strings.Contains(e, "=") {
			return procSpec{}, rpcErr(codes.InvalidArgument, "env entry %q is not NAME=VALUE", e)
		}
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) || strings.IndexByte(cwd, 0) >= 0 {
		return procSpec{}, rpcErr(codes.InvalidArgument, "cwd %q is not absolute", cwd)
	}
	return procSpec{argv: p.Args, env: p.Env, cwd: path.Clean(cwd)}, nil
}

// CreateContainer records a container on its rootfs (the spec's
// Root.Path, else BundleRoot/ID/rootfs). The process is the spec's, or,
// with no args, the image's entrypoint and CMD (its config beside the
// rootfs); its env defaults to the image's.
func (s *containers) CreateContainer(ctx context.Context, req *kata.CreateContainerRequest) (*emptypb.Empty, error) {
	if err := checkID("container_id", req.ContainerId); err != nil {
		return nil, err
	}
	eid := req.ExecId
	if eid == "" {
		eid = req.ContainerId
	}
	if err := checkID("exec_id", eid); err != nil {
		return nil, err
	}
	if req.OCI == nil || req.OCI.Process == nil {
		return nil, rpcErr(codes.InvalidArgument, "no OCI spec with a process")
	}
	ps, err := checkProcess(req.OCI.Process)
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(BundleRoot, req.ContainerId, "rootfs")
	if r := req.OCI.Root; r != nil && r.Path != "" {
		if !filepath.IsAbs(r.Path) || filepath.Clean(r.Path) != r.Path || len(r.Path) > 4096 {
			return nil, rpcErr(codes.InvalidArgument, "root path %q must be a clean absolute path", r.Path)
		}
		rootfs = r.Path
	}
	if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
		return nil, rpcErr(codes.NotFound, "rootfs %s is not a directory (pull the image into its bundle first: CDH PullImage)", rootfs)
	}
	if len(ps.argv) == 0 || len(ps.env) == 0 {
		argv, env, wd, err := imageProcess(rootfs, nil)
		if err != nil {
			return nil, rpcErr(codes.InvalidArgument, "%v", err)
		}
		if len(ps.argv) == 0 {
			ps.argv = argv
			if req.OCI.Process.Cwd == "" {
				ps.cwd = wd
			}
		}
		if len(ps.env) == 0 {
			ps.env = env
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cs[req.ContainerId]; ok {
		return nil, rpcErr(codes.AlreadyExists, "container %s exists", req.ContainerId)
	}
	if len(s.cs) >= maxContainers {
		return nil, rpcErr(codes.ResourceExhausted, "already %d containers", maxContainers)
	}
	s.cs[req.ContainerId] = &container{id: req.ContainerId, rootfs: rootfs, initExec: eid, init: ps, procs: map[string]*process{}}
	return &emptypb.Empty{}, nil
}

func (s *containers) get(cid string) (*container, error) {
	if err := checkID("container_id", cid); err != nil {
		return nil, err
	}
	c, ok := s.cs[cid]
	if !ok {
		return nil, rpcErr(codes.NotFound, "no container %s", cid)
	}
	return c, nil
}

// StartContainer starts the container's init process.
func (s *containers) StartContainer(ctx context.Context, req *kata.StartContainerRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if c.started {
		return nil, rpcErr(codes.FailedPrecondition, "container %s was started already", c.id)
	}
	p, err := spawn(func(out, errw *os.File) (*exec.Cmd, error) {
		return startInit(s.ctx, c.rootfs, c.init.cwd, c.init.argv, c.init.env, out, errw)
	})
	if err != nil {
		return nil, rpcErr(codes.Internal, "starting container %s: %v", c.id, err)
	}
	c.started = true
	c.procs[c.initExec] = p
	return &emptypb.Empty{}, nil
}

// spawn makes the output pipes, starts the process and reaps it in the
// background.
func spawn(start func(stdout, stderr *os.File) (*exec.Cmd, error)) (*process, error) {
	or, ow, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	er, ew, err := os.Pipe()
	if err != nil {
		or.Close()
		ow.Close()
		return nil, err
	}
	cmd, err := start(ow, ew)
	ow.Close()
	ew.Close()
	if err != nil {
		or.Close()
		er.Close()
		return nil, err
	}
	p := &process{cmd: cmd, stdout: &stream{f: or}, stderr: &stream{f: er}, done: make(chan struct{})}
	go func() {
		p.status, _ = waitStatus(cmd)
		close(p.done)
	}()
	return p, nil
}

// ExecProcess starts another process in a started container: it joins
// the init's PID, UTS and IPC namespaces and runs in its root (its mounts
// included, through /proc/PID/root).
func (s *containers) ExecProcess(ctx context.Context, req *kata.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := checkID("exec_id", req.ExecId); err != nil {
		return nil, err
	}
	ps, err := checkProcess(req.Process)
	if err != nil {
		return nil, err
	}
	if len(ps.argv) == 0 {
		return nil, rpcErr(codes.InvalidArgument, "no args")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	init := c.procs[c.initExec]
	if init == nil || isDone(init) {
		return nil, rpcErr(codes.FailedPrecondition, "container %s is not running", c.id)
	}
	if _, ok := c.procs[req.ExecId]; ok {
		return nil, rpcErr(codes.AlreadyExists, "exec %s exists in container %s", req.ExecId, c.id)
	}
	if len(c.procs) >= maxProcesses {
		return nil, rpcErr(codes.ResourceExhausted, "container %s already has %d processes", c.id, maxProcesses)
	}
	if len(ps.env) == 0 {
		ps.env = c.init.env
	}
	pid := init.cmd.Process.Pid
	p, err := spawn(func(out, errw *os.File) (*exec.Cmd, error) {
		return startJoined(s.ctx, pid, ps, out, errw)
	})
	if err != nil {
		return nil, rpcErr(codes.Internal, "exec in container %s: %v", c.id, err)
	}
	c.procs[req.ExecId] = p
	return &emptypb.Empty{}, nil
}

// startJoined starts ps in the namespaces and root of process pid (a
// container's init). It runs on a thread of its own that joins pid's
// PID, UTS and IPC namespaces (setns works per thread, and the new PID
// namespace only for children) and is thrown away afterwards; the child
// chroots into /proc/PID/root, the init's root with its mounts.
func startJoined(ctx context.Context, pid int, ps procSpec, stdout, stderr *os.File) (*exec.Cmd, error) {
	root := "/proc/" + strconv.Itoa(pid) + "/root"
	bin, err := lookPathIn(root, ps.argv[0], ps.env)
	if err != nil {
		return nil, err
	}
	type result struct {
		cmd *exec.Cmd
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		for _, ns := range []struct {
			name string
			flag int
		}{{"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}, {"pid", unix.CLONE_NEWPID}} {
			fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				res <- result{err: fmt.Errorf("joining the container's %s namespace: %w", ns.name, err)}
				return
			}
			err = unix.Setns(fd, ns.flag)
			unix.Close(fd)
			if err != nil {
				res <- result{err: fmt.Errorf("joining the container's %s namespace: %w", ns.name, err)}
				return
			}
		}
		cmd := &exec.Cmd{Path: bin, Args: ps.argv, Env: ps.env, Dir: ps.cwd, Stdout: stdout, Stderr: stderr,
			SysProcAttr: &syscall.SysProcAttr{Chroot: root}}
		err := cmd.Start()
		res <- result{cmd, err}
	}()
	r := <-res
	if r.err != nil {
		return nil, r.err
	}
	context.AfterFunc(ctx, func() { r.cmd.Process.Kill() })
	return r.cmd, nil
}

// lookPathIn resolves a command name the way the container's shell
// would, against the PATH of env, in root; names with a slash are taken
// as they are (relative to the process's cwd, inside the container).
func lookPathIn(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	p := strings.TrimPrefix(defaultPath, "PATH=")
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			p = v
		}
	}
	for _, dir := range filepath.SplitList(p) {
		if !path.IsAbs(dir) {
			continue
		}
		cand := path.Join(dir, name)
		if _, err := os.Lstat(root + cand); err == nil {
			return cand, nil
		}
	}
	return "", rpcErr(codes.NotFound, "%s: not found in the container's PATH", name)
}

func isDone(p *process) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// proc finds a process: exec_id "" is the container's init.
func (s *containers) proc(cid, eid string) (*container, *process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.get(cid)
	if err != nil {
		return nil, nil, err
	}
	if eid == "" {
		eid = c.initExec
	}
	p, ok := c.procs[eid]
	if !ok {
		return nil, nil, rpcErr(codes.NotFound, "no process %s in container %s (not started?)", eid, cid)
	}
	return c, p, nil
}

// WaitProcess waits for a process to end and returns its exit status
// (128+N for signal N).
func (s *containers) WaitProcess(ctx context.Context, req *kata.WaitProcessRequest) (*kata.WaitProcessResponse, error) {
	_, p, err := s.proc(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
		return &kata.WaitProcessResponse{Status: int32(p.status)}, nil
	case <-ctx.Done():
		return nil, rpcErr(codes.Canceled, "wait: %v", ctx.Err())
	}
}

// ReadStdout reads at most len (clamped to 1 MiB; 0 means 32 KiB) bytes
// of a process's stdout, blocking until some are there. At the end of
// the stream it answers empty data, as kata-agent does (rpc.rs
// read_stream at kata-containers 7c6ba40c).
func (s *containers) ReadStdout(ctx context.Context, req *kata.ReadStreamRequest) (*kata.ReadStreamResponse, error) {
	_, p, err := s.proc(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	return p.stdout.read(ctx, req.Len)
}

// ReadStderr is ReadStdout for stderr.
func (s *containers) ReadStderr(ctx context.Context, req *kata.ReadStreamRequest) (*kata.ReadStreamResponse, error) {
	_, p, err := s.proc(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	return p.stderr.read(ctx, req.Len)
}

func (st *stream) read(ctx context.Context, n uint32) (*kata.ReadStreamResponse, error) {
	if n == 0 {
		n = defaultRead
	}
	n = min(n, maxRead)
	st.mu.Lock()
	defer st.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { st.f.SetReadDeadline(time.Now()) })
	defer stop()
	st.f.SetReadDeadline(time.Time{})
	buf := make([]byte, n)
	k, err := st.f.Read(buf)
	if k > 0 {
		return &kata.ReadStreamResponse{Data: buf[:k]}, nil
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
		return &kata.ReadStreamResponse{}, nil // empty data is the end, as kata-agent answers
	case ctx.Err() != nil:
		return nil, rpcErr(codes.Canceled, "read: %v", ctx.Err())
	default:
		return nil, rpcErr(codes.Internal, "read: %v", err)
	}
}

// SignalProcess sends signal to a process; exec_id "" means every
// process of the container.
func (s *containers) SignalProcess(ctx context.Context, req *kata.SignalProcessRequest) (*emptypb.Empty, error) {
	if req.Signal == 0 || req.Signal > 64 {
		return nil, rpcErr(codes.InvalidArgument, "signal %d: want 1 to 64", req.Signal)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	var ps []*process
	if req.ExecId == "" {
		for _, p := range c.procs {
			ps = append(ps, p)
		}
	} else if p, ok := c.procs[req.ExecId]; ok {
		ps = append(ps, p)
	} else {
		return nil, rpcErr(codes.NotFound, "no process %s in container %s", req.ExecId, c.id)
	}
	for _, p := range ps {
		if !isDone(p) {
			p.cmd.Process.Signal(syscall.Signal(req.Signal))
		}
	}
	return &emptypb.Empty{}, nil
}

// RemoveContainer kills the container's processes, waits for them (at
// most timeout seconds; 0: as long as the call lasts) and forgets it.
// The rootfs stays (it is the bundle's).
func (s *containers) RemoveContainer(ctx context.Context, req *kata.RemoveContainerRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	c, err := s.get(req.ContainerId)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	var ps []*process
	for _, p := range c.procs {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout)*time.Second)
		defer cancel()
	}
	for _, p := range ps {
		if !isDone(p) {
			p.cmd.Process.Kill()
		}
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, rpcErr(codes.DeadlineExceeded, "container %s: a process did not end: %v", c.id, ctx.Err())
		}
	}
	s.mu.Lock()
	delete(s.cs, c.id)
	s.mu.Unlock()
	for _, p := range ps {
		p.stdout.f.Close()
		p.stderr.f.Close()
	}
	return &emptypb.Empty{}, nil
}

// stopAll kills every process and waits for them (the agent's end).
func (s *containers) stopAll(wait time.Duration) {
	s.mu.Lock()
	var ps []*process
	for _, c := range s.cs {
		for _, p := range c.procs {
			ps = append(ps, p)
		}
	}
	s.mu.Unlock()
	for _, p := range ps {
		if !isDone(p) {
			p.cmd.Process.Kill()
		}
	}
	deadline := time.After(wait)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
			return
		}
	}
}

var _ kata.AgentServiceService = (*containers)(nil)
