package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/vm/console"
)

// WithAgentSocket names the unix socket Start makes for the guest agent
// (QEMU's end of its virtio-serial port). Its directory is created 0700
// when missing and must not be open to group or others; the socket is
// made 0600. Default: agent.sock in a private directory under the state
// directory, removed when the machine ends.
func WithAgentSocket(path string) Option {
	return func(o *options) error {
		if path == "" || len(path) > 100 {
			return fmt.Errorf("agent socket %q: want a path of 1 to 100 bytes (a unix socket's limit): %w", path, spec.ErrUnsupported)
		}
		o.agentSocket = path
		return nil
	}
}

// WithForward makes the host's loopback address addr (127.0.0.1:PORT, for
// example a registry the guest pulls from) reachable at the guest's own
// 127.0.0.1:PORT. Start forwards the broker's port by itself.
func WithForward(addr string) Option {
	return func(o *options) error {
		if _, err := loopbackPort("forwarded address", addr); err != nil {
			return err
		}
		o.forward = append(o.forward, addr)
		return nil
	}
}

// StopTimeout is how long Stop waits for the guest to power off when its
// context has no deadline, before it kills QEMU.
const StopTimeout = 30 * time.Second

// Machine is a long-running guest in agent mode (see Start).
type Machine struct {
	sock, consoleLog string
	stdin            io.WriteCloser
	cancel           context.CancelFunc
	done             chan struct{}
	err              error // the guest's end, valid after done
	removeSock       func()
	stopOnce         sync.Once

	connMu  sync.Mutex
	dials   int           // connections Dial made
	ends    int           // connection ends the guest reported
	endedCh chan struct{} // closed and replaced at each reported end
}

// Start boots a guest in agent mode: it measures init-data and its
// command line, attests to the broker (WithKBS, required) as Run's guest
// does, then serves, on a virtio-serial port, guest-components' CDH and
// AA ttrpc services (package agent/ttrpc: PullImage unpacks into the
// guest's memory) and a subset of kata-containers' agent service
// (grpc.AgentService: CreateContainer, StartContainer, ExecProcess,
// WaitProcess, ReadStdout, ReadStderr, SignalProcess, RemoveContainer),
// which runs what PullImage unpacked. Start returns once the guest
// serves (a broker denial is an error wrapping spec.ErrPolicyDenied);
// the timeout (WithTimeout) bounds that boot. The machine then runs until
// Stop, until the guest ends, or until ctx ends (which kills it).
func Start(ctx context.Context, opts ...Option) (*Machine, error) {
	o, err := collect(opts)
	if err != nil {
		return nil, err
	}
	if o.kbs == "" {
		return nil, fmt.Errorf("vm start: a broker URL is required: %w", spec.ErrUnsupported)
	}
	u, err := url.Parse(o.kbs)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("broker URL %q: want http://127.0.0.1:PORT: %w", o.kbs, spec.ErrUnsupported)
	}
	kp, err := loopbackPort("broker", u.Host)
	if err != nil {
		return nil, err
	}
	ports := []int{kp}
	for _, a := range o.forward {
		p, _ := loopbackPort("forwarded address", a)
		if !containsInt(ports, p) {
			ports = append(ports, p)
		}
	}
	sock, removeSock, err := agentSocket(o)
	if err != nil {
		return nil, err
	}
	o.qemuExtra = []string{"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=chagent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,bus=vser0.0,chardev=chagent,name=" + console.AgentPort}
	o.stdin = true
	gc := console.GuestConfig{Mode: "agent", KBS: o.kbs, Forward: ports}

	mctx, cancel := context.WithCancel(ctx)
	start := time.Now()
	ready := make(chan struct{})
	var readyOnce sync.Once
	m := &Machine{sock: sock, consoleLog: filepath.Join(o.state, "console.log"),
		cancel: cancel, done: make(chan struct{}), removeSock: removeSock, endedCh: make(chan struct{})}
	mark := func(name string) {
		if o.marks != nil {
			o.marks(name, time.Since(start))
		}
		switch name {
		case console.MarkServing:
			readyOnce.Do(func() { close(ready) })
		case console.MarkDisconnected:
			m.connMu.Lock()
			m.ends++
			close(m.endedCh)
			m.endedCh = make(chan struct{})
			m.connMu.Unlock()
		}
	}
	g, err := startGuest(mctx, o, gc, mark)
	if err != nil {
		cancel()
		removeSock()
		return nil, err
	}
	m.stdin = g.stdin
	go func() {
		defer close(m.done)
		_, derr := demux(console.NewReader(g.stdout), o, g.logf, mark)
		io.Copy(io.Discard, g.stdout)
		werr := g.q.Wait()
		mark("exit")
		g.cleanup()
		removeSock()
		switch {
		case derr != nil:
			m.err = derr
		case mctx.Err() != nil:
			m.err = fmt.Errorf("vm: the machine was stopped: %w", context.Cause(mctx))
		case werr != nil:
			m.err = fmt.Errorf("vm: qemu: %v %s (console log: %s)", werr, lastLines(g.qerr.Bytes(), 2), m.consoleLog)
		}
	}()
	timer := time.NewTimer(o.timeout)
	defer timer.Stop()
	select {
	case <-ready:
	case <-m.done:
		cancel()
		if m.err == nil {
			m.err = fmt.Errorf("vm: the guest powered off before serving (console log: %s)", m.consoleLog)
		}
		return nil, m.err
	case <-timer.C:
		cancel()
		<-m.done
		return nil, fmt.Errorf("vm: the guest agent did not serve within %v (console log: %s): %w", o.timeout, m.consoleLog, context.DeadlineExceeded)
	case <-ctx.Done():
		<-m.done
		return nil, ctx.Err()
	}
	// QEMU made the socket when it started (server=on,wait=off).
	if err := os.Chmod(sock, 0o600); err != nil {
		m.Kill()
		return nil, fmt.Errorf("vm: agent socket: %w", err)
	}
	o.log.Info("guest agent serving", "socket", sock)
	return m, nil
}

// agentSocket returns the socket path QEMU listens on and a function
// removing it (and its private directory, when Start made one).
func agentSocket(o *options) (string, func(), error) {
	if o.agentSocket == "" {
		if err := os.MkdirAll(o.state, 0o700); err != nil {
			return "", nil, fmt.Errorf("vm state: %w", err)
		}
		dir, err := os.MkdirTemp(o.state, "agent-")
		if err != nil {
			return "", nil, fmt.Errorf("vm state: %w", err)
		}
		abs, err := filepath.Abs(filepath.Join(dir, "agent.sock"))
		if err != nil || len(abs) > 100 {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("vm: the state directory's path is too long for a unix socket: use a shorter --state or name the socket (--agent-socket): %w", spec.ErrUnsupported)
		}
		return abs, func() { os.RemoveAll(dir) }, nil
	}
	abs, err := filepath.Abs(o.agentSocket)
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Dir(abs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("agent socket directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o077 != 0 {
		return "", nil, fmt.Errorf("agent socket directory %s is open to group or others (chmod 700 it): %w", dir, spec.ErrUnsupported)
	}
	if fi, err := os.Lstat(abs); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return "", nil, fmt.Errorf("agent socket %s exists and is not a socket: %w", abs, spec.ErrUnsupported)
		}
		os.Remove(abs) // a stale socket of an earlier machine
	}
	return abs, func() { os.Remove(abs) }, nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Socket is the host's unix socket of the guest agent (0600).
func (m *Machine) Socket() string { return m.sock }

// Console is the path of the guest's console log (kernel lines and the
// guest's log frames).
func (m *Machine) Console() string { return m.consoleLog }

// Dial connects to the guest agent: one ttrpc connection (ttrpc
// multiplexes calls over it) serving the CDH (api.*), AA
// (attestation_agent.AttestationAgentService) and container
// (grpc.AgentService) services. QEMU's end takes one connection at a
// time: close it before dialling again. Dial first waits (at most
// ReconnectWait) until the guest has seen the previous connection end,
// since a quick reconnection would otherwise look to the guest like the
// same byte stream going on.
func (m *Machine) Dial(ctx context.Context) (net.Conn, error) {
	select {
	case <-m.done:
		return nil, fmt.Errorf("vm: the machine has ended: %w", spec.ErrNotFound)
	default:
	}
	m.connMu.Lock()
	defer m.connMu.Unlock()
	wait := time.NewTimer(ReconnectWait)
	defer wait.Stop()
	for m.ends < m.dials {
		ch := m.endedCh
		m.connMu.Unlock()
		select {
		case <-ch:
		case <-wait.C:
			m.connMu.Lock()
			m.ends = m.dials // the guest may never have seen that connection
			continue
		case <-ctx.Done():
			m.connMu.Lock()
			return nil, ctx.Err()
		case <-m.done:
			m.connMu.Lock()
			return nil, fmt.Errorf("vm: the machine has ended: %w", spec.ErrNotFound)
		}
		m.connMu.Lock()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", m.sock)
	if err != nil {
		return nil, fmt.Errorf("vm: guest agent: %w", err)
	}
	m.dials++
	return c, nil
}

// ReconnectWait bounds how long Dial waits for the guest to see the
// previous connection end.
const ReconnectWait = 5 * time.Second

// Wait waits for the machine to end: nil when the guest powered off by
// itself or on Stop, else why it ended.
func (m *Machine) Wait() error {
	<-m.done
	return m.err
}

// Done is closed when the machine has ended.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Stop asks the guest to power off (it stops its containers first) and
// waits for QEMU to end, until ctx is done (StopTimeout when ctx has no
// deadline); then it kills QEMU and swtpm. When Stop returns, neither
// runs and the machine's sockets and run directory are gone.
func (m *Machine) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() {
		m.stdin.Write([]byte(stopFrame))
		m.stdin.Close()
	})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, StopTimeout)
		defer cancel()
	}
	select {
	case <-m.done:
		m.cancel()
		if m.err != nil && !errors.Is(m.err, context.Canceled) {
			return m.err
		}
		return nil
	case <-ctx.Done():
		m.Kill()
		return fmt.Errorf("vm: the guest did not power off in time; killed: %w", ctx.Err())
	}
}

// Kill kills QEMU (and with it swtpm) at once and waits for both.
func (m *Machine) Kill() {
	m.cancel()
	<-m.done
}

// stopFrame is the console frame Stop writes (console.Stop).
const stopFrame = "\x1bCF1 " + string(console.Stop) + " -\n"

// Serve starts a machine (Start), hands it to ready (which must not
// block), and runs it until ctx ends, then stops it as Stop does
// (StopTimeout); or until it ends by itself, returning why. ctx's end
// during the boot aborts it.
func Serve(ctx context.Context, ready func(*Machine), opts ...Option) error {
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	abortBoot := context.AfterFunc(ctx, cancel)
	m, err := Start(mctx, opts...)
	booted := abortBoot() // from here on, ctx's end is a graceful stop
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if !booted {
		m.Kill()
		return ctx.Err()
	}
	if ready != nil {
		ready(m)
	}
	select {
	case <-ctx.Done():
		return m.Stop(context.WithoutCancel(ctx))
	case <-m.Done():
		return m.Wait()
	}
}
