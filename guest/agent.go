package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/agent/client"
	agentttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/kata"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/transport"
	"github.com/coffer-dev/coffer/vm/console"
)

// serveAgent is agent mode after attestation: it serves the CDH and AA
// services of package agent/ttrpc and the container service (kata's
// grpc.AgentService subset) on the virtio-serial port console.AgentPort,
// until the host writes a Stop frame on the console; then it kills the
// containers and returns (Init powers off).
func serveAgent(ctx context.Context, c *console.Writer, kc *client.Client, att *attester, initData []byte, logf func(string, ...any)) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go watchStop(stop)
	// A long-running agent shares the guest's memory with its containers:
	// a soft limit makes the runtime collect sooner instead of letting the
	// heap double between collections (GOGC) during a big pull.
	debug.SetMemoryLimit(agentMemoryLimit)
	// The registry is the host's loopback, reached through QEMU's user
	// network, as in run mode: the broker-held keys and pins make the
	// image trustworthy, not the transport.
	opts, err := initDataOptions(initData)
	if err != nil {
		return err
	}
	opts = append(opts, agentttrpc.WithTransport(transport.WithInsecure(true)),
		agentttrpc.WithEventLog(agentttrpc.DefaultEventLog, RuntimePCR, tpmRegisters{att.t}))
	srv, err := agentttrpc.New(ctx, kc, att, opts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := os.MkdirAll(BundleRoot, 0o700); err != nil {
		return err
	}
	ts, err := cttrpc.NewServer(cttrpc.WithUnaryServerInterceptor(pullHook(c)))
	if err != nil {
		return err
	}
	srv.Register(ts, ts)
	cs := newContainers(ctx)
	kata.RegisterAgentServiceService(ts, cs)

	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	dev, err := findPort(fctx, console.AgentPort)
	cancel()
	if err != nil {
		return err
	}
	ln := listenPort(dev, func() { c.Send(console.Mark, []byte(console.MarkDisconnected)) })
	errc := make(chan error, 1)
	go func() { errc <- ts.Serve(ctx, ln) }()
	c.Send(console.Mark, []byte(console.MarkServing))
	logf("serving on %s", dev)
	var serveErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, cttrpc.ErrServerClosed) {
			serveErr = fmt.Errorf("agent: %w", err)
		}
	}
	stop()
	cs.stopAll(5 * time.Second)
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	if ts.Shutdown(sctx) != nil {
		ts.Close()
	}
	scancel()
	ln.Close()
	return serveErr
}

// RuntimePCR is the vTPM register runtime measurements (AA
// ExtendRuntimeMeasurement, each PullImage) extend in agent mode, with the
// CoCo AAEL at agent/ttrpc's DefaultEventLog. Not guest-components'
// default 17: a DRTM PCR, which locality 0 cannot extend.
const RuntimePCR = 23

// initDataOptions are the CDH and AA settings of the init-data's cdh.toml
// and aa.toml (image security policy, registry credentials and
// configuration, token configs), as coffer agent --initdata applies them.
// The broker stays the one the guest attested to.
func initDataOptions(initData []byte) ([]agentttrpc.Option, error) {
	if initData == nil {
		return nil, nil
	}
	id, err := agentttrpc.ParseInitData(initData)
	if err != nil {
		return nil, fmt.Errorf("init-data: %w", err)
	}
	cfg, err := id.Config()
	if err != nil {
		return nil, fmt.Errorf("init-data: %w", err)
	}
	return cfg.Options, nil
}

// tpmRegisters are the guest's vTPM PCRs as agent/ttrpc's runtime
// registers.
type tpmRegisters struct{ t *tpm.TPM }

func (r tpmRegisters) Extend(ctx context.Context, index uint64, digest []byte) error {
	if index >= tpm.NumPCRs {
		return fmt.Errorf("PCR %d out of range: %w", index, spec.ErrUnsupported)
	}
	return r.t.ExtendPCR(ctx, int(index), digest)
}

func (r tpmRegisters) Read(ctx context.Context, index uint64) ([]byte, error) {
	pcrs, err := r.t.ReadPCRs(ctx)
	if err != nil {
		return nil, err
	}
	if index >= uint64(len(pcrs)) {
		return nil, fmt.Errorf("PCR %d out of range: %w", index, spec.ErrUnsupported)
	}
	return pcrs[index], nil
}

// agentMemoryLimit is the agent's soft limit of Go-managed memory (the
// binary's own text comes on top of it in the RSS).
const agentMemoryLimit = 24 << 20

// pullHook wraps PullImage: it creates the bundle directory when it is a
// container's under BundleRoot, as kata-agent does before it asks CDH to
// pull (CDH itself wants the directory to exist), and reports coffer's
// peak RSS after the pull (a Stat frame, maxrss_kib).
func pullHook(c *console.Writer) cttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal cttrpc.Unmarshaler, info *cttrpc.UnaryServerInfo, method cttrpc.Method) (any, error) {
		if info.FullMethod != "/api.ImagePullService/PullImage" {
			return method(ctx, unmarshal)
		}
		var req cdh.ImagePullRequest
		if err := unmarshal(&req); err == nil {
			b := req.BundlePath
			if filepath.IsAbs(b) && filepath.Clean(b) == b && filepath.Dir(b) == BundleRoot && idRE.MatchString(filepath.Base(b)) {
				os.Mkdir(b, 0o700)
			}
		}
		resp, err := method(ctx, unmarshal)
		var ru unix.Rusage
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
			c.Send(console.Stat, fmt.Appendf(nil, "maxrss_kib %d", ru.Maxrss))
		}
		return resp, err
	}
}

// watchStop calls stop when the host writes a Stop frame on the console
// (the console's input, with echo turned off so that nothing the host
// writes comes back as a frame). Other lines are ignored; console.Reader
// bounds them.
func watchStop(stop func()) {
	if t, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		t.Lflag &^= unix.ECHO | unix.ECHONL
		unix.IoctlSetTermios(0, unix.TCSETS, t)
	}
	r := console.NewReader(os.Stdin)
	for {
		f, _, err := r.Next()
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// EOF (no input) or an overlong line: start over after a pause.
			time.Sleep(100 * time.Millisecond)
			r = console.NewReader(os.Stdin)
			continue
		}
		if f != nil && f.Kind == console.Stop {
			stop()
			return
		}
	}
}
