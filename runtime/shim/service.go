package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/runtime"
	shimlib "github.com/containerd/containerd/runtime/v2/shim"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/internal/bounded"
)

// service is the shim's task service: one per pod (CRI groups a pod's
// containers on its sandbox's shim) or per ctr container. The pod's
// containers run in one guest, booted when the first of them starts.
type service struct {
	ctx      context.Context // the shim's life
	id       string
	pub      shimlib.Publisher
	shutdown func()

	mu    sync.Mutex
	tasks map[string]*task
	cfg   *Config

	guestMu sync.Mutex // held while the guest boots
	guest   *guest
}

// task is a container: the pod's sandbox (a placeholder on the host: the
// guest is the sandbox) or a container run in the guest.
type task struct {
	id, bundle string
	sandbox    bool
	spec       *taskSpec
	init       *proc
	execs      map[string]*proc
}

// proc is a container's init or an exec'd process.
type proc struct {
	cid, execID    string // execID is "" for the init
	stdout, stderr string // containerd's FIFOs
	spec           *procSpec

	mu       sync.Mutex
	status   tasktypes.Status
	exit     uint32
	exitedAt time.Time
	done     chan struct{}
}

func newService(ctx context.Context, id string, pub shimlib.Publisher, shutdown func()) (shimlib.Shim, error) {
	return &service{ctx: ctx, id: id, pub: pub, shutdown: shutdown, tasks: map[string]*task{}}, nil
}

func newProc(cid, execID, stdout, stderr string, ps *procSpec) *proc {
	return &proc{cid: cid, execID: execID, stdout: stdout, stderr: stderr, spec: ps,
		status: tasktypes.Status_CREATED, done: make(chan struct{})}
}

// exited records the process's end once.
func (p *proc) exited(status uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == tasktypes.Status_STOPPED {
		return false
	}
	p.status, p.exit, p.exitedAt = tasktypes.Status_STOPPED, status, time.Now()
	close(p.done)
	return true
}

func (p *proc) state() (tasktypes.Status, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exit, p.exitedAt
}

// pid is what the shim reports as every process's PID: the guest's
// processes have none on the host, so, as Kata's shim does, the shim's own.
func pid() uint32 { return uint32(os.Getpid()) }

func (s *service) publish(topic string, ev any) {
	if err := s.pub.Publish(s.ctx, topic, ev); err != nil {
		logf(s.ctx, "publishing %s: %v", topic, err)
	}
}

func notFound(format string, a ...any) error {
	return errdefs.ToGRPCf(errdefs.ErrNotFound, format, a...)
}

// lookup returns the task and the process an (ID, ExecID) pair names.
func (s *service) lookup(id, execID string) (*task, *proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return nil, nil, notFound("container %s", id)
	}
	if execID == "" {
		return t, t.init, nil
	}
	p, ok := t.execs[execID]
	if !ok {
		return nil, nil, notFound("exec %s in container %s", execID, id)
	}
	return t, p, nil
}

// Create records a container. The first one loads the configuration, so
// a node without one fails at once with the path it looked at.
func (s *service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	if r.Terminal {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "coffer runtime: a terminal is not supported yet")
	}
	ts, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "coffer runtime: bundle %s: %v", r.Bundle, err)
	}
	if err := s.loadConfig(r); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	t := &task{id: r.ID, bundle: r.Bundle, spec: ts, execs: map[string]*proc{},
		sandbox: ts.Annotations[AnnotationContainerType] == "sandbox"}
	ps := ts.Process
	if ps == nil {
		ps = &procSpec{}
	}
	t.init = newProc(r.ID, "", r.Stdout, r.Stderr, ps)
	s.mu.Lock()
	if _, ok := s.tasks[r.ID]; ok {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	s.tasks[r.ID] = t
	s.mu.Unlock()
	s.publish(runtime.TaskCreateEventTopic, &eventsapi.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle,
		Rootfs: r.Rootfs, IO: &eventsapi.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr}, Pid: pid()})
	return &taskapi.CreateTaskResponse{Pid: pid()}, nil
}

// Start starts a container's init in the guest (booting the guest for
// the first), or an exec'd process. It returns once the process runs, so
// a guest the broker refuses fails the start with the broker's reason.
func (s *service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	t, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if st, _, _ := p.state(); st != tasktypes.Status_CREATED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "process %s of %s is %s", r.ExecID, r.ID, st)
	}
	if t.sandbox && r.ExecID == "" {
		p.mu.Lock()
		p.status = tasktypes.Status_RUNNING
		p.mu.Unlock()
	} else {
		if err := s.startInGuest(ctx, t, p); err != nil {
			logf(s.ctx, "start %s %s: %v", r.ID, r.ExecID, err)
			if r.ExecID == "" && !s.anyRunning() {
				// Nothing runs in the guest (it may have failed its
				// attestation): power it off now rather than at the
				// pod's end, so it holds no memory or guest state.
				s.stopGuest(ctx)
			}
			return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "coffer runtime: %v", err)
		}
	}
	if r.ExecID == "" {
		s.publish(runtime.TaskStartEventTopic, &eventsapi.TaskStart{ContainerID: r.ID, Pid: pid()})
	} else {
		s.publish(runtime.TaskExecStartedEventTopic, &eventsapi.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: pid()})
	}
	return &taskapi.StartResponse{Pid: pid()}, nil
}

// guestProcs lists the processes the guest runs or ran: every init but
// the sandbox's placeholder, and every exec.
func (s *service) guestProcs() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []*proc
	for _, t := range s.tasks {
		if t.sandbox {
			continue
		}
		ps = append(ps, t.init)
		for _, e := range t.execs {
			ps = append(ps, e)
		}
	}
	return ps
}

// anyRunning reports whether a container or exec of the guest runs.
func (s *service) anyRunning() bool {
	for _, p := range s.guestProcs() {
		if st, _, _ := p.state(); st == tasktypes.Status_RUNNING {
			return true
		}
	}
	return false
}

// wait runs in the background from a process's start: it records the
// exit and publishes it.
func (s *service) wait(p *proc, waitExit func() (uint32, error)) {
	status, err := waitExit()
	if err != nil {
		logf(s.ctx, "waiting for %s %s: %v", p.cid, p.execID, err)
		status = 255
	}
	s.exit(p, status)
}

func (s *service) exit(p *proc, status uint32) {
	if !p.exited(status) {
		return
	}
	_, code, at := p.state()
	id := p.execID
	if id == "" {
		id = p.cid
	}
	s.publish(runtime.TaskExitEventTopic, &eventsapi.TaskExit{ContainerID: p.cid, ID: id, Pid: pid(),
		ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)})
}

// Kill signals a process (in the guest; the sandbox placeholder ends).
func (s *service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	t, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, _, _ := p.state()
	switch {
	case st == tasktypes.Status_STOPPED:
	case st == tasktypes.Status_CREATED || t.sandbox && r.ExecID == "":
		s.exit(p, 128+r.Signal)
	default:
		g := s.currentGuest()
		if g == nil {
			s.exit(p, 128+r.Signal)
			break
		}
		if err := g.signal(ctx, p, r.Signal); err != nil {
			select {
			case <-g.m.Done():
				s.exit(p, 128+r.Signal)
			default:
				return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "coffer runtime: signal %d to %s: %v", r.Signal, r.ID, err)
			}
		}
	}
	if r.All && r.ExecID == "" {
		s.mu.Lock()
		execs := make([]*proc, 0, len(t.execs))
		for _, e := range t.execs {
			execs = append(execs, e)
		}
		s.mu.Unlock()
		for _, e := range execs {
			if st, _, _ := e.state(); st == tasktypes.Status_CREATED {
				s.exit(e, 128+r.Signal)
			}
		}
	}
	return &emptypb.Empty{}, nil
}

// Wait waits for a process to end.
func (s *service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, code, at := p.state()
	return &taskapi.WaitResponse{ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Delete removes an exec'd process or a container (from the guest too);
// the guest stops when the pod's last container is gone.
func (s *service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	t, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, code, at := p.state()
	if st == tasktypes.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "process %s of %s is running: kill it first", r.ExecID, r.ID)
	}
	if st == tasktypes.Status_CREATED {
		s.exit(p, 0)
		_, code, at = p.state()
	}
	resp := &taskapi.DeleteResponse{Pid: pid(), ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}
	if r.ExecID != "" {
		s.mu.Lock()
		delete(t.execs, r.ExecID)
		s.mu.Unlock()
		return resp, nil
	}
	if g := s.currentGuest(); g != nil && !t.sandbox {
		g.remove(ctx, t.id)
	}
	s.mu.Lock()
	delete(s.tasks, r.ID)
	left := len(s.tasks)
	s.mu.Unlock()
	s.publish(runtime.TaskDeleteEventTopic, &eventsapi.TaskDelete{ContainerID: r.ID, Pid: pid(), ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)})
	if left == 0 {
		s.stopGuest(ctx)
	}
	return resp, nil
}

// Exec records a process to run in a container (ExecProcess in the guest
// at its start).
func (s *service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	if r.Terminal {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "coffer runtime: a terminal is not supported yet")
	}
	if r.Spec == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: no process spec", r.ExecID)
	}
	ps, err := parseProcess(r.Spec.GetValue())
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: %v", r.ExecID, err)
	}
	s.mu.Lock()
	t, ok := s.tasks[r.ID]
	switch {
	case !ok:
		s.mu.Unlock()
		return nil, notFound("container %s", r.ID)
	case t.sandbox:
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "exec in the pod sandbox %s: it is a placeholder on the host", r.ID)
	case t.execs[r.ExecID] != nil:
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s", r.ExecID)
	case len(t.execs) >= maxExecs:
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrResourceExhausted, "already %d execs in %s", maxExecs, r.ID)
	}
	t.execs[r.ExecID] = newProc(r.ID, r.ExecID, r.Stdout, r.Stderr, ps)
	s.mu.Unlock()
	s.publish(runtime.TaskExecAddedEventTopic, &eventsapi.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

const maxExecs = 63 // the guest's limit is 64 processes a container, the init included

// State reports a process.
func (s *service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	t, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, code, at := p.state()
	resp := &taskapi.StateResponse{ID: r.ID, ExecID: r.ExecID, Bundle: t.bundle, Pid: pid(), Status: st,
		Stdout: p.stdout, Stderr: p.stderr, ExitStatus: code}
	if st == tasktypes.Status_STOPPED {
		resp.ExitedAt = protobuf.ToTimestamp(at)
	}
	return resp, nil
}

// Pids lists the container's processes, as the host sees them: the shim.
func (s *service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	if _, _, err := s.lookup(r.ID, ""); err != nil {
		return nil, err
	}
	return &taskapi.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: pid()}}}, nil
}

func (s *service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	return &taskapi.ConnectResponse{ShimPid: pid(), TaskPid: pid(), Version: RuntimeName}, nil
}

// CloseIO: the shim gives the guest no stdin, so there is nothing to close.
func (s *service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// Shutdown ends the shim once it has no container left.
func (s *service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	left := len(s.tasks)
	s.mu.Unlock()
	if left > 0 {
		return &emptypb.Empty{}, nil
	}
	s.stopGuest(ctx)
	if addr, err := shimlib.ReadAddress("address"); err == nil {
		_ = shimlib.RemoveSocket(addr)
	}
	s.shutdown()
	return &emptypb.Empty{}, nil
}

func notImplemented(what string) error {
	return errdefs.ToGRPCf(errdefs.ErrNotImplemented, "coffer runtime: %s is not supported", what)
}

func (s *service) Pause(context.Context, *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return nil, notImplemented("pause")
}
func (s *service) Resume(context.Context, *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return nil, notImplemented("resume")
}
func (s *service) Checkpoint(context.Context, *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, notImplemented("checkpoint")
}
func (s *service) ResizePty(context.Context, *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, notImplemented("a terminal")
}
func (s *service) Update(context.Context, *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, notImplemented("update")
}
func (s *service) Stats(context.Context, *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	return nil, notImplemented("stats")
}

// Cleanup is the shim's delete action, run by containerd when the shim
// serving a container is gone: its guest died with it (QEMU has the
// shim's death signal), so there is only the status to report.
func (s *service) Cleanup(ctx context.Context) (*taskapi.DeleteResponse, error) {
	return &taskapi.DeleteResponse{ExitedAt: protobuf.ToTimestamp(time.Now()), ExitStatus: 128 + 9}, nil
}

// loadConfig reads the configuration once: the path in the runtime's
// options (containerd's runtimeoptions ConfigPath: CRI's
// [...runtimes.coffer.options] ConfigPath, ctr run --runtime-config-path),
// else COFFER_SHIM_CONFIG, else DefaultConfigPath.
func (s *service) loadConfig(r *taskapi.CreateTaskRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg != nil {
		return nil
	}
	path, err := configPath(r.Options)
	if err != nil {
		return err
	}
	c, err := LoadConfig(path)
	if err != nil {
		return err
	}
	s.cfg = c
	return nil
}

func configPath(opts *anypb.Any) (string, error) {
	if p, err := optionsConfigPath(opts); err != nil || p != "" {
		return p, err
	}
	if p := os.Getenv("COFFER_SHIM_CONFIG"); p != "" {
		return p, nil
	}
	return DefaultConfigPath, nil
}

func (s *service) config() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// initData is the init-data TOML a pod's guest gets: the annotation
// (kata's cc_init_data, on the sandbox and each container) or the
// configured file.
func initData(t *task, c *Config) ([]byte, error) {
	if v, ok := t.spec.Annotations[ttrpc.AnnotationInitData]; ok {
		d, err := ttrpc.DecodeAnnotation(v)
		if err != nil {
			return nil, err
		}
		return d.TOML, nil
	}
	if c.InitData == "" {
		return nil, nil
	}
	raw, err := bounded.ReadFile(c.InitData, ttrpc.MaxInitData)
	if err != nil {
		return nil, fmt.Errorf("init-data %s: %w", c.InitData, err)
	}
	if _, err := ttrpc.ParseInitData(raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// imageOf names the container's image: CRI's annotation, coffer's, or
// what containerd's container record says (ctr run sets no annotation).
func (s *service) imageOf(ctx context.Context, t *task) (string, error) {
	for _, k := range []string{AnnotationImageName, AnnotationImage} {
		if v := t.spec.Annotations[k]; v != "" {
			return v, nil
		}
	}
	return containerImage(ctx, t.id)
}

// loopbackRegistry returns the registry host of ref when it is the
// host's loopback (127.0.0.1:PORT, localhost:PORT), which the guest
// reaches only through a forwarded port.
func loopbackRegistry(ref string) string {
	host, _, ok := strings.Cut(strings.TrimPrefix(ref, "docker://"), "/")
	if !ok {
		return ""
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil || h != "127.0.0.1" && h != "localhost" {
		return ""
	}
	return "127.0.0.1:" + host[len(h)+1:]
}

// guestSaid is what the guest's error says, made safe for a status:
// control characters replaced, cut at 1 KiB.
func guestSaid(err error) string { return bounded.Printable(err.Error(), 1024) }

var errGuestGone = errors.New("the pod's guest has ended")

func bundlePath(cid string) string { return filepath.Join("/run/kata-containers", cid) }
