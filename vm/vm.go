// Package vm boots a confidential guest: QEMU (TCG by default, KVM when
// asked) with a swtpm vTPM whose EK is certified by the machine's own CA,
// the kernel of an extracted Debian linux-image package, and an initramfs
// generated from the running coffer binary, which is the guest's init
// (package guest). The host hands the guest its init-data and what to run
// through fw_cfg; the guest measures init-data into PCR 8 before anything
// else, attests to the broker with its vTPM quote and event logs, pulls
// and runs the image, and reports on the serial console (package
// vm/console), which Run demultiplexes into the container's stdout,
// stderr and exit status.
package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/vm/console"
)

// BaseCmdline is the kernel command line every guest boots with, before
// --append. root=/dev/ram9 keeps the initramfs on ramfs (not tmpfs), which
// the kernel's IMA measures, and ima_policy=tcb makes IMA measure /init
// (coffer), every module and every file root reads into PCR 10 before
// it is used. The command line itself is measured by the guest's init
// into PCR 9.
const BaseCmdline = "console=ttyS0 loglevel=1 panic=-1 root=/dev/ram9 rdinit=/init ima_policy=tcb"

// DefaultMemoryMiB is the guest's memory when none is given.
const DefaultMemoryMiB = 512

// Option configures Run and Measure.
type Option func(*options) error

type options struct {
	kernelDir, state, kbs string
	initData, appendArgs  string
	memory                int
	init                  string
	accel                 string
	stdout, stderr        io.Writer
	log                   *slog.Logger
	timeout               time.Duration
	marks                 func(name string, at time.Duration)
	evidence              func([]byte)
	stats                 func(name string, v float64)
	disk                  *diskOptions // WithScratchDisk (disk.go)

	// Set by Start (machine.go), not by options.
	qemuExtra   []string // more QEMU arguments
	stdin       bool     // keep the console's input open (guest.stdin)
	agentSocket string
	forward     []string
}

// WithKernelDir names the extracted linux-image package (required).
func WithKernelDir(dir string) Option {
	return func(o *options) error { o.kernelDir = dir; return nil }
}

// WithState names the machine's state directory (required): its vTPM
// (created on first use), EK CA and console log.
func WithState(dir string) Option { return func(o *options) error { o.state = dir; return nil } }

// WithKBS names the broker, as the host sees it: http://127.0.0.1:PORT or
// http://localhost:PORT (the guest reaches nothing else).
func WithKBS(u string) Option { return func(o *options) error { o.kbs = u; return nil } }

// WithInitData hands the guest the init-data document in file.
func WithInitData(file string) Option {
	return func(o *options) error { o.initData = file; return nil }
}

// WithAppend adds args to the kernel command line (after BaseCmdline).
func WithAppend(args string) Option {
	return func(o *options) error { o.appendArgs = args; return nil }
}

// WithMemory sets the guest's memory in MiB (default DefaultMemoryMiB).
func WithMemory(mib int) Option {
	return func(o *options) error {
		if mib < 128 || mib > 64<<10 {
			return fmt.Errorf("guest memory %d MiB: want 128 to 65536: %w", mib, spec.ErrUnsupported)
		}
		o.memory = mib
		return nil
	}
}

// WithInit uses the binary at path as the guest's init instead of the
// running coffer (os.Executable). It must be a static coffer build.
func WithInit(path string) Option { return func(o *options) error { o.init = path; return nil } }

// WithAccel chooses QEMU's accelerator: "tcg" (default) or "kvm".
func WithAccel(a string) Option {
	return func(o *options) error {
		if a != "tcg" && a != "kvm" {
			return fmt.Errorf("accelerator %q: want tcg or kvm: %w", a, spec.ErrUnsupported)
		}
		o.accel = a
		return nil
	}
}

// WithOutput sets where the container's stdout and stderr go (default:
// discarded).
func WithOutput(stdout, stderr io.Writer) Option {
	return func(o *options) error { o.stdout, o.stderr = stdout, stderr; return nil }
}

// WithLogger sets the logger (default: discard); the guest's progress
// lines are logged at info.
func WithLogger(l *slog.Logger) Option { return func(o *options) error { o.log = l; return nil } }

// WithTimeout bounds one boot (default 10 minutes).
func WithTimeout(d time.Duration) Option { return func(o *options) error { o.timeout = d; return nil } }

// WithMarks calls f with each boot phase the host observes and its time
// since Run started: "qemu" (QEMU started), "init" (the guest's init
// ran), "kernel" (time the kernel had run when init started, reported
// by the guest), "measured" (PCRs 8 and 9 extended), "attested",
// "pulled", "started" (the container's
// process started), "output" (its first output), "exit".
func WithMarks(f func(name string, at time.Duration)) Option {
	return func(o *options) error { o.marks = f; return nil }
}

// WithEvidence hands f the guest's raw evidence JSON of a Measure boot
// (tpm.Evidence, quoted with zero report data): for tests and audits.
func WithEvidence(f func([]byte)) Option {
	return func(o *options) error { o.evidence = f; return nil }
}

// WithStats calls f with each figure the guest reports (maxrss_kib:
// coffer's peak RSS in the guest after the pull, in KiB).
func WithStats(f func(name string, v float64)) Option {
	return func(o *options) error { o.stats = f; return nil }
}

func collect(opts []Option) (*options, error) {
	o := &options{memory: DefaultMemoryMiB, accel: "tcg", stdout: io.Discard, stderr: io.Discard,
		log: slog.New(slog.DiscardHandler), timeout: 10 * time.Minute}
	for _, f := range opts {
		if err := f(o); err != nil {
			return nil, err
		}
	}
	if o.kernelDir == "" || o.state == "" {
		return nil, fmt.Errorf("vm: a kernel dir and a state dir are required: %w", spec.ErrUnsupported)
	}
	if o.init == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("vm: finding coffer's own binary for the guest: %w", err)
		}
		o.init = exe
	}
	return o, nil
}

// loopbackPort returns the port of a URL or registry reference that must
// name the host's loopback: 127.0.0.1:PORT or localhost:PORT.
func loopbackPort(what, hostport string) (int, error) {
	h, p, err := net.SplitHostPort(hostport)
	if err == nil && (h == "127.0.0.1" || h == "localhost") {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 65536 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s %q: the guest reaches only the host's loopback, so write it as 127.0.0.1:PORT: %w", what, hostport, spec.ErrUnsupported)
}

// imagePort is the loopback registry port of a docker:// image reference.
func imagePort(image string) (int, error) {
	rest, ok := strings.CutPrefix(image, "docker://")
	if !ok {
		return 0, fmt.Errorf("image %q: the guest pulls from a registry: write docker://127.0.0.1:PORT/NAME:TAG: %w", image, spec.ErrUnsupported)
	}
	host, _, _ := strings.Cut(rest, "/")
	return loopbackPort("image registry", host)
}

// Run boots the guest, which attests to the broker, pulls IMAGE (a
// docker:// reference on the host's loopback), and runs its entrypoint
// and CMD (cmd, when given, replaces the image's CMD). It returns the
// container's exit status. A broker denial is an error wrapping
// spec.ErrPolicyDenied with the broker's reason; other guest failures
// wrap the sentinel the guest reports.
func Run(ctx context.Context, image string, cmd []string, opts ...Option) (int, error) {
	o, err := collect(opts)
	if err != nil {
		return 0, err
	}
	if o.kbs == "" {
		return 0, fmt.Errorf("vm run: a broker URL is required: %w", spec.ErrUnsupported)
	}
	u, err := url.Parse(o.kbs)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" {
		return 0, fmt.Errorf("broker URL %q: want http://127.0.0.1:PORT: %w", o.kbs, spec.ErrUnsupported)
	}
	kp, err := loopbackPort("broker", u.Host)
	if err != nil {
		return 0, err
	}
	ip, err := imagePort(image)
	if err != nil {
		return 0, err
	}
	if err := o.checkDisk(); err != nil {
		return 0, err
	}
	gc := console.GuestConfig{Mode: "run", KBS: o.kbs, Image: image, Cmd: cmd, Forward: uniq(kp, ip), Scratch: o.scratchConfig()}
	res, err := boot(ctx, o, gc)
	if err != nil {
		return 0, err
	}
	return res.exit, nil
}

func uniq(a, b int) []int {
	if a == b {
		return []int{a}
	}
	return []int{a, b}
}

// bootResult is what the console said.
type bootResult struct {
	exit     int
	evidence []byte
}

// errGuestDenied and friends classify a guest's failure frame.
var guestClasses = map[string]error{
	"policy": spec.ErrPolicyDenied, "integrity": spec.ErrIntegrity, "nokey": spec.ErrNoKey,
	"notfound": spec.ErrNotFound, "unsupported": spec.ErrUnsupported, "unauthorized": spec.ErrUnauthorized,
}

// boot runs one guest to its end.
func boot(ctx context.Context, o *options, gc console.GuestConfig) (*bootResult, error) {
	start := time.Now()
	mark := func(name string) {
		if o.marks != nil {
			o.marks(name, time.Since(start))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	g, err := startGuest(ctx, o, gc, mark)
	if err != nil {
		return nil, err
	}
	defer g.cleanup()
	res, derr := demux(console.NewReader(g.stdout), o, g.logf, mark)
	io.Copy(io.Discard, g.stdout)
	werr := g.q.Wait()
	mark("exit")
	if derr != nil {
		return nil, derr
	}
	if res == nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("vm: the guest did not finish within %v: %w", o.timeout, ctx.Err())
		}
		return nil, fmt.Errorf("vm: the guest ended without reporting a result (qemu: %v %s; console log: %s)", werr, lastLines(g.qerr.Bytes(), 2), filepath.Join(o.state, "console.log"))
	}
	return res, nil
}

// guest is a started QEMU and what it holds.
type guest struct {
	q       *exec.Cmd
	stdout  io.Reader      // the serial console
	stdin   io.WriteCloser // the serial console's input (o.stdin), else nil
	qerr    *tailBuffer
	logf    *os.File
	cleanup func() // after q.Wait: stops swtpm, removes the run directory
}

// startGuest prepares the initramfs, config and vTPM and starts QEMU;
// both end with ctx.
func startGuest(ctx context.Context, o *options, gc console.GuestConfig, mark func(string)) (g *guest, err error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	k, err := FindKernel(o.kernelDir)
	if err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 not found (apt-get install qemu-system-x86): %w", spec.ErrNotFound)
	}
	if err := os.MkdirAll(o.state, 0o700); err != nil {
		return nil, fmt.Errorf("vm state: %w", err)
	}
	if err := ensureTPM(ctx, o.state); err != nil {
		return nil, err
	}
	run, err := os.MkdirTemp(o.state, "run-")
	if err != nil {
		return nil, fmt.Errorf("vm state: %w", err)
	}
	undo = append(undo, func() { os.RemoveAll(run) })
	initrd := filepath.Join(run, "initramfs.gz")
	if err := atomicfile.WriteFunc(initrd, func(w io.Writer) error { return WriteInitramfs(w, o.init, k, o.initramfsExtras()...) }); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(run, "config.json")
	if err := writeJSON(cfgFile, gc); err != nil {
		return nil, err
	}
	sock, stopTPM, err := startTPM(ctx, o.state)
	if err != nil {
		return nil, err
	}
	undo = append(undo, stopTPM)
	args := []string{
		"-accel", o.accel, "-m", strconv.Itoa(o.memory), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", k.Image, "-initrd", initrd, "-append", Cmdline(o.appendArgs),
		"-chardev", "socket,id=chrtpm,path=" + sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=",
		"-fw_cfg", "name=" + console.GuestConfigName + ",file=" + cfgFile,
	}
	if o.accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	disk, err := o.diskArgs()
	if err != nil {
		return nil, err
	}
	args = append(args, disk...)
	if o.initData != "" {
		if _, err := os.Stat(o.initData); err != nil {
			return nil, fmt.Errorf("init-data: %w", err)
		}
		args = append(args, "-fw_cfg", "name="+console.InitDataName+",file="+o.initData)
	}
	args = append(args, o.qemuExtra...)
	g = &guest{qerr: &tailBuffer{}}
	q := exec.CommandContext(ctx, qemu, args...)
	q.Stdin = nil
	// QEMU dies with the process that started it (a killed containerd
	// shim, say), and swtpm ends when QEMU closes its socket.
	q.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if o.stdin {
		if g.stdin, err = q.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if g.stdout, err = q.StdoutPipe(); err != nil {
		return nil, err
	}
	q.Stderr = g.qerr
	if g.logf, err = os.OpenFile(filepath.Join(o.state, "console.log"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600); err != nil {
		return nil, fmt.Errorf("vm state: %w", err)
	}
	undo = append(undo, func() { g.logf.Close() })
	if err := q.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	g.q, g.cleanup = q, cleanup
	mark("qemu")
	o.log.Info("guest booting", "kernel", k.Version, "accel", o.accel, "memory_mib", o.memory)
	return g, nil
}

// Cmdline is the kernel command line of a guest booted with appendArgs.
func Cmdline(appendArgs string) string {
	if appendArgs == "" {
		return BaseCmdline
	}
	return BaseCmdline + " " + appendArgs
}

// demux reads the console to the guest's last word.
func demux(r *console.Reader, o *options, logf io.Writer, mark func(string)) (*bootResult, error) {
	first := true
	for {
		f, line, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if f == nil {
			logf.Write(append(line, '\n'))
			continue
		}
		switch f.Kind {
		case console.Stdout, console.Stderr:
			if first {
				mark("output")
				first = false
			}
			w := o.stdout
			if f.Kind == console.Stderr {
				w = o.stderr
			}
			w.Write(f.Payload)
		case console.Hello:
			mark("init")
			if up, err := strconv.ParseFloat(string(f.Payload), 64); err == nil && o.marks != nil {
				o.marks("kernel", time.Duration(up*float64(time.Second)))
			}
		case console.Mark:
			mark(string(f.Payload))
		case console.Stat:
			name, val, _ := strings.Cut(string(f.Payload), " ")
			o.log.Info("guest stat", "name", name, "value", val)
			if o.stats != nil {
				if n, err := strconv.ParseFloat(val, 64); err == nil {
					o.stats(name, n)
				}
			}
		case console.Log:
			fmt.Fprintf(logf, "coffer-guest: %s\n", f.Payload)
			o.log.Info("guest", "msg", string(f.Payload))
		case console.Exit:
			n, err := console.ParseExit(f.Payload)
			if err != nil {
				return nil, err
			}
			return &bootResult{exit: n}, nil
		case console.Evidence:
			return &bootResult{evidence: f.Payload}, nil
		case console.Denied:
			return nil, fmt.Errorf("the broker refused the guest: %s: %w", f.Payload, spec.ErrPolicyDenied)
		case console.Failed:
			class, msg, _ := strings.Cut(string(f.Payload), " ")
			if s, ok := guestClasses[class]; ok {
				return nil, fmt.Errorf("guest: %s: %w", strings.TrimSuffix(msg, ": "+s.Error()), s)
			}
			return nil, fmt.Errorf("guest: %s", msg)
		}
	}
}
