package cli

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/vm"
)

// exitStatus is a command's result that is a child's exit status
// (cmd/coffer exits with it, printing nothing).
type exitStatus int

func (e exitStatus) Error() string   { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitStatus) ExitStatus() int { return int(e) }

type vmFlags struct {
	kernelDir, state, initData, appendArgs, init, accel string
	memory                                              int
	scratchDisk, scratchKey                             string
	scratchIntegrity                                    bool
}

func (f *vmFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.kernelDir, "kernel-dir", "", "an extracted Debian linux-image package (boot/vmlinuz-*, lib/modules/*) (required)")
	fs.StringVar(&f.state, "state", "", "the machine's state: its vTPM (created on first use, EK certificate included), EK CA (ek-ca.pem) and console log (required)")
	fs.StringVar(&f.initData, "init-data", "", "init-data document (TOML, algorithm sha256) measured into PCR 8 and sent with the evidence")
	fs.StringVar(&f.appendArgs, "append", "", "more kernel command-line arguments (measured into PCR 9)")
	fs.StringVar(&f.init, "init", "", "the guest's init binary (default: this coffer; must be a static coffer build)")
	fs.StringVar(&f.accel, "accel", "tcg", "QEMU accelerator: tcg or kvm")
	fs.IntVar(&f.memory, "memory", vm.DefaultMemoryMiB, "guest memory in MiB")
	fs.StringVar(&f.scratchDisk, "scratch-disk", "", "FILE[:SIZE]: a raw disk image (created sparse, default size 4G) the guest opens as a LUKS2 volume with the broker key --scratch-key-id and unpacks the image onto, so images larger than guest memory fit")
	fs.BoolVar(&f.scratchIntegrity, "scratch-integrity", false, "format the scratch disk with dm-integrity sector tags (hmac-sha256) under LUKS2, as CDH's dataIntegrity")
	fs.StringVar(&f.scratchKey, "scratch-key-id", "", "the broker resource holding the scratch disk's key: repo/type/tag (required with --scratch-disk in vm run)")
}

// scratchOptions parses --scratch-disk FILE[:SIZE] and --scratch-key-id.
func (f *vmFlags) scratchOptions() ([]vm.Option, error) {
	if f.scratchDisk == "" {
		if f.scratchKey != "" || f.scratchIntegrity {
			return nil, fmt.Errorf("--scratch-key-id or --scratch-integrity without --scratch-disk: %w", ErrUsage)
		}
		return nil, nil
	}
	path, mib := f.scratchDisk, int64(0)
	if i := strings.LastIndexByte(path, ':'); i > 0 {
		var sz sizeFlag
		if err := sz.Set(path[i+1:]); err != nil {
			return nil, fmt.Errorf("--scratch-disk %s: size %w: %w", f.scratchDisk, err, ErrUsage)
		}
		if sz.n%(1<<20) != 0 {
			return nil, fmt.Errorf("--scratch-disk %s: the size must be whole MiB: %w", f.scratchDisk, ErrUsage)
		}
		path, mib = path[:i], sz.n>>20
	}
	opts := []vm.Option{vm.WithScratchDisk(path, mib)}
	if f.scratchKey != "" {
		opts = append(opts, vm.WithScratchKey(f.scratchKey))
	}
	if f.scratchIntegrity {
		opts = append(opts, vm.WithScratchIntegrity())
	}
	return opts, nil
}

func (f *vmFlags) options() ([]vm.Option, error) {
	if f.kernelDir == "" || f.state == "" {
		return nil, fmt.Errorf("--kernel-dir and --state are required: %w", ErrUsage)
	}
	opts := []vm.Option{vm.WithKernelDir(f.kernelDir), vm.WithState(f.state), vm.WithAppend(f.appendArgs),
		vm.WithMemory(f.memory), vm.WithAccel(f.accel), vm.WithLogger(slog.Default()),
		vm.WithMarks(func(name string, at time.Duration) {
			slog.Info("vm phase", "phase", name, "at", at.Round(time.Millisecond))
		})}
	if f.initData != "" {
		opts = append(opts, vm.WithInitData(f.initData))
	}
	if f.init != "" {
		opts = append(opts, vm.WithInit(f.init))
	}
	scratch, err := f.scratchOptions()
	if err != nil {
		return nil, err
	}
	return append(opts, scratch...), nil
}

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Run images in a measured, attested guest VM (QEMU + vTPM, coffer as the guest's init)",
	}
	cmd.AddCommand(newVMRunCmd(), newVMMeasureCmd(), newVMStartCmd())
	return cmd
}

func newVMRunCmd() *cobra.Command {
	var f vmFlags
	var kbs string
	cmd := &cobra.Command{
		Use:   "run --kernel-dir DIR --state DIR --kbs URL [--init-data FILE] [--append ARGS] [--memory MiB] [--scratch-disk FILE[:SIZE] --scratch-key-id ID] IMAGE [-- CMD ARGS...]",
		Short: "Boot a guest that attests, pulls IMAGE and runs it; exit with its status",
		Long: `Boot a QEMU guest with a vTPM whose init is coffer itself. The guest measures
init-data (PCR 8) and its kernel command line (PCR 9), attests to the broker
with its quote, event logs and EK certificate, pulls, decrypts, verifies and
unpacks IMAGE, and runs its entrypoint and CMD (or CMD ARGS after --) in its
own namespaces. The container's output appears on stdout and stderr and
coffer exits with its status; a broker denial exits 5 with the broker's
reason. IMAGE and --kbs are written as the host sees them and must be on
the host's loopback (docker://127.0.0.1:PORT/…, http://127.0.0.1:PORT).

With --scratch-disk the guest gets FILE as a virtio-blk disk: it fetches the
key --scratch-key-id names from the broker, opens the LUKS2 volume on FILE
(formatting it when FILE holds no LUKS header) and unpacks the image there
instead of in memory. A disk formatted with another key fails the run (exit 3)
and nothing is mounted; what a re-opened disk held is deleted first.`,
		Example: `  coffer vm run --kernel-dir ~/.cache/coffer-tools/linux-image --state ./machine \
    --kbs http://127.0.0.1:8080 docker://127.0.0.1:5000/app:enc -- cat /secret
  coffer vm run ... --memory 256 --scratch-disk ./scratch.img:8G --scratch-key-id default/disk/scratch docker://127.0.0.1:5000/big:enc`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options()
			if err != nil {
				return err
			}
			if kbs = orEnv(kbs, "COFFER_KBS_URL"); kbs == "" {
				return fmt.Errorf("--kbs is required: %w", ErrUsage)
			}
			opts = append(opts, vm.WithKBS(kbs), vm.WithOutput(cmd.OutOrStdout(), cmd.ErrOrStderr()))
			code, err := vm.Run(cmd.Context(), args[0], args[1:], opts...)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		},
	}
	f.add(cmd)
	addBrokerURLFlag(cmd.Flags(), &kbs, "the key broker, as the host sees it: http://127.0.0.1:PORT (required; env COFFER_KBS_URL)")
	return cmd
}

func newVMMeasureCmd() *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "measure --kernel-dir DIR --state DIR [--init-data FILE] [--append ARGS]",
		Short: "Boot once and print the reference values a broker needs for exactly that boot",
		Long: `Boot the guest once as coffer vm run would (same kernel, initramfs, command
line and init-data) and print one NAME VALUE line per reference value, ready for
coffer kbs set-reference-value NAME VALUE. The EK the broker should trust is
certified by the machine's CA: start the broker with
--tpm-ek-ca STATE/ek-ca.pem.`,
		Example: `  coffer vm measure --kernel-dir K --state ./machine --init-data init.toml |
    while read n v; do coffer kbs set-reference-value --kbs URL --admin-key admin.pem "$n" "$v"; done`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options()
			if err != nil {
				return err
			}
			refs, err := vm.Measure(cmd.Context(), opts...)
			if err != nil {
				return err
			}
			for _, r := range refs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", r.Name, r.Value)
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newVMStartCmd() *cobra.Command {
	var f vmFlags
	var kbs, sock string
	var forward []string
	cmd := &cobra.Command{
		Use:   "start --kernel-dir DIR --state DIR --kbs URL [--init-data FILE] [--agent-socket PATH] [--forward 127.0.0.1:PORT]...",
		Short: "Boot a long-running guest agent and serve its ttrpc API on a unix socket until interrupted",
		Long: `Boot a guest as coffer vm run does (measured init-data and command line, attested
to the broker) that then serves, over a virtio-serial port, guest-components'
CDH and AA ttrpc APIs (PullImage, GetResource, UnsealSecret, GetEvidence,
GetToken, ...) and kata-containers' agent API subset (grpc.AgentService:
CreateContainer, StartContainer, ExecProcess, WaitProcess, ReadStdout,
ReadStderr, SignalProcess, RemoveContainer). The host's end is a unix socket
(--agent-socket; 0600 in a 0700 directory), printed on stdout once the guest
serves; one ttrpc connection at a time. Images are pulled from registries on
the host's loopback named by --forward. On SIGINT or SIGTERM the guest stops
its containers and powers off; QEMU and swtpm end with it. See docs/vm.md.`,
		Example: `  coffer vm start --kernel-dir ~/.cache/coffer-tools/linux-image --state ./machine \
    --kbs http://127.0.0.1:8080 --forward 127.0.0.1:5000 --agent-socket /run/coffer/agent.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options()
			if err != nil {
				return err
			}
			if kbs = orEnv(kbs, "COFFER_KBS_URL"); kbs == "" {
				return fmt.Errorf("--kbs is required: %w", ErrUsage)
			}
			opts = append(opts, vm.WithKBS(kbs))
			if sock != "" {
				opts = append(opts, vm.WithAgentSocket(sock))
			}
			for _, a := range forward {
				opts = append(opts, vm.WithForward(a))
			}
			out := cmd.OutOrStdout()
			return vm.Serve(cmd.Context(), func(m *vm.Machine) { fmt.Fprintln(out, m.Socket()) }, opts...)
		},
	}
	f.add(cmd)
	addBrokerURLFlag(cmd.Flags(), &kbs, "the key broker, as the host sees it: http://127.0.0.1:PORT (required; env COFFER_KBS_URL)")
	cmd.Flags().StringVar(&sock, "agent-socket", "", "unix socket of the guest agent (default: agent-*/agent.sock under --state, removed on exit)")
	cmd.Flags().StringArrayVar(&forward, "forward", nil, "a host loopback address (127.0.0.1:PORT, e.g. a registry) the guest reaches at its own 127.0.0.1:PORT; repeatable")
	return cmd
}
