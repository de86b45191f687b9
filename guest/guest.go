// Package guest is coffer as PID 1 of a vm guest: it mounts the kernel's
// file systems, loads the modules the initramfs carries, measures
// init-data into PCR 8 and the kernel command line into PCR 9 before it
// does anything else with them, brings up the network (10.0.2.15/24 on
// QEMU's user-mode network; the host's loopback ports it was told about
// are forwarded to the guest's own 127.0.0.1), attests to the broker with
// its vTPM quote, the firmware and IMA event logs, its own measurements
// and its EK certificate (with credential activation), pulls, decrypts,
// verifies and unpacks the image, runs it in its own mount and PID
// namespaces and reports everything on the serial console (vm/console).
// Then it powers the machine off. In agent mode (vm.Start) it serves the
// CDH, AA and container ttrpc services on a virtio-serial port instead
// (agent.go), until the host asks it to power off. It assumes nothing of the host.
package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/transport"
	"github.com/coffer-dev/coffer/vm/console"
)

// Paths in the guest.
const (
	fwCfg        = "/sys/firmware/qemu_fw_cfg/by_name/"
	modulesList  = "/lib/modules/load"
	tpmDevice    = "/dev/tpmrm0"
	firmwareLog  = "/sys/kernel/security/tpm0/binary_bios_measurements"
	imaLog       = "/sys/kernel/security/ima/binary_runtime_measurements"
	rootfsDir    = "/run/container/rootfs"
	maxLogBytes  = 1 << 20
	cmdlinePCR   = 9
	guestAddr    = "10.0.2.15"
	hostLoopback = "10.0.2.2" // QEMU user networking's alias of the host's 127.0.0.1
)

// Init is the guest's PID 1. It never returns on Linux: it powers off.
func Init() int {
	c := console.NewWriter(os.Stdout)
	err := run(context.Background(), c)
	if err != nil {
		// The broker refusing (401/403, or a policy denial) is a denial;
		// a broker that failed (5xx, unreachable) is a failure.
		var be *protocol.BrokerError
		refused := errors.As(err, &be) && (be.Status == http.StatusUnauthorized || be.Status == http.StatusForbidden)
		if refused || errors.Is(err, spec.ErrPolicyDenied) {
			c.Send(console.Denied, []byte(err.Error()))
		} else {
			c.Send(console.Failed, []byte(class(err)+" "+err.Error()))
		}
	}
	powerOff()
	return 0
}

func class(err error) string {
	for _, c := range []struct {
		name string
		s    error
	}{{"policy", spec.ErrPolicyDenied}, {"integrity", spec.ErrIntegrity}, {"nokey", spec.ErrNoKey},
		{"notfound", spec.ErrNotFound}, {"unauthorized", spec.ErrUnauthorized}, {"unsupported", spec.ErrUnsupported}} {
		if errors.Is(err, c.s) {
			return c.name
		}
	}
	return "other"
}

func run(ctx context.Context, c *console.Writer) error {
	if err := mountAll(); err != nil {
		return err
	}
	up, _ := os.ReadFile("/proc/uptime")
	kernelTime, _, _ := strings.Cut(string(up), " ")
	c.Send(console.Hello, []byte(kernelTime))
	if err := loadModules(modulesList); err != nil {
		return err
	}
	cfg, initData, err := readInputs()
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		if cfg.Verbose {
			c.Send(console.Log, fmt.Appendf(nil, format, a...))
		}
	}
	// Measure before anything uses them: init-data (PCR 8), the kernel
	// command line (PCR 9).
	t, err := tpm.Open(ctx, tpmDevice)
	if err != nil {
		return err
	}
	defer t.Close()
	var initLog []tpm.InitEvent
	if initData != nil {
		d := sha256.Sum256(initData)
		if err := t.ExtendPCR(ctx, tpm.InitDataPCR, d[:]); err != nil {
			return err
		}
		initLog = append(initLog, tpm.InitEvent{PCR: tpm.InitDataPCR, Event: "init-data", Digest: hex.EncodeToString(d[:])})
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	cl := strings.TrimRight(string(cmdline), "\n")
	d := sha256.Sum256([]byte(cl))
	if err := t.ExtendPCR(ctx, cmdlinePCR, d[:]); err != nil {
		return err
	}
	initLog = append(initLog, tpm.InitEvent{PCR: cmdlinePCR, Event: "cmdline", Digest: hex.EncodeToString(d[:]), Data: cl})
	c.Send(console.Mark, []byte("measured"))
	logf("measured init-data and the kernel command line")

	att := &attester{t: t, initLog: initLog}
	if cfg.Mode == "measure" {
		ev, err := att.evidence(ctx, make([]byte, tpm.ReportDataSize), true)
		if err != nil {
			return err
		}
		return c.Send(console.Evidence, ev)
	}
	if err := network(ctx, cfg.Forward); err != nil {
		return err
	}
	var opts []client.Option
	if initData != nil {
		opts = append(opts, client.WithInitData(initData))
	}
	kc, err := client.New(cfg.KBS, append(opts, client.WithAttester(att))...)
	if err != nil {
		return err
	}
	if _, err := kc.Attest(ctx); err != nil {
		return err
	}
	c.Send(console.Mark, []byte("attested"))
	logf("attested to %s", cfg.KBS)
	if cfg.Mode == "agent" {
		return serveAgent(ctx, c, kc, att, initData, logf)
	}
	ref, err := transport.Parse(cfg.Image)
	if err != nil {
		return err
	}
	if cfg.Scratch != nil { // scratch.go
		if err := mountScratch(ctx, kc, cfg.Scratch, logf); err != nil {
			return err
		}
		c.Send(console.Mark, []byte("scratch"))
	}
	if err := os.MkdirAll(filepath.Dir(rootfsDir), 0o700); err != nil {
		return err
	}
	// The registry is the host's loopback, reached through QEMU's user
	// network (plain HTTP is allowed there): what makes the image
	// trustworthy is the broker-held layer keys and the digests they
	// authenticate, not the transport.
	topts := []transport.Option{transport.WithInsecure(true)}
	// The manifest must match the digest pin the broker holds for the
	// image (coffer encrypt --kbs sets it), as coffer pull --kbs checks.
	chk, err := imagepolicy.New(imagepolicy.WithTransport(topts...), imagepolicy.WithPins(kc))
	if err != nil {
		return err
	}
	if err := pull.Pull(ctx, ref, rootfsDir, pull.WithKeys(aa.NewUnwrapper(kc.KeyResolver())),
		pull.WithTransport(topts...), pull.WithVerify(chk.Verify)); err != nil {
		return err
	}
	c.Send(console.Mark, []byte("pulled"))
	logf("pulled %s", cfg.Image)
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil { // after the pull, before the container
		c.Send(console.Stat, fmt.Appendf(nil, "maxrss_kib %d", ru.Maxrss))
	}
	code, err := runContainer(ctx, rootfsDir, cfg.Cmd, c)
	if err != nil {
		return err
	}
	return c.Send(console.Exit, console.ExitPayload(code))
}

// readInputs reads the host's config and init-data from fw_cfg.
func readInputs() (*console.GuestConfig, []byte, error) {
	raw, err := readBounded(fwCfg+console.GuestConfigName+"/raw", console.MaxGuestConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("guest config: %w", err)
	}
	var cfg console.GuestConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, nil, fmt.Errorf("guest config: %v: %w", err, spec.ErrUnsupported)
	}
	var initData []byte
	if _, err := os.Stat(fwCfg + console.InitDataName); err == nil {
		if initData, err = readBounded(fwCfg+console.InitDataName+"/raw", 128<<10); err != nil {
			return nil, nil, fmt.Errorf("init-data: %w", err)
		}
	}
	return &cfg, initData, nil
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", path, max, spec.ErrUnsupported)
	}
	return b, nil
}

// network brings up lo and the first ethernet interface and forwards each
// port in forward from the guest's 127.0.0.1 to the host's loopback.
func network(ctx context.Context, forward []int) error {
	if err := ifUp("lo", nil, nil); err != nil {
		return err
	}
	eth, err := firstEthernet()
	if err != nil {
		return err
	}
	if err := ifUp(eth, net.ParseIP(guestAddr), net.CIDRMask(24, 32)); err != nil {
		return err
	}
	for _, p := range forward {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return fmt.Errorf("forwarding port %d: %w", p, err)
		}
		go forwardPort(ctx, l, net.JoinHostPort(hostLoopback, strconv.Itoa(p)))
	}
	return nil
}

func forwardPort(ctx context.Context, l net.Listener, target string) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			d := net.Dialer{Timeout: 10 * time.Second}
			out, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				return
			}
			defer out.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(in, out); in.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}
