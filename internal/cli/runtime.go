package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/runtime/nodecfg"
)

func newRuntimeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "runtime",
		Short: "Check or set up a container runtime (containerd, CRI-O) to run encrypted images",
	}
	cmd.AddCommand(newRuntimeCheckCmd(), newRuntimeInstallCmd(), newRuntimeSnapshotterCmd(), newRuntimePullCmd())
	return cmd
}

func newRuntimeCheckCmd() *cobra.Command {
	var containerd, crio string
	cmd := &cobra.Command{
		Use:   "check [--containerd-config FILE] [--crio-config FILE]",
		Short: "Explain, one line each, what would stop encrypted images from running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var opts []nodecfg.CheckOption
			if containerd == "" && crio == "" {
				containerd = nodecfg.DefaultContainerdConfig
			}
			if containerd != "" {
				opts = append(opts, nodecfg.WithContainerdConfig(containerd))
			}
			if crio != "" {
				opts = append(opts, nodecfg.WithCRIOConfig(crio))
			}
			problems, err := nodecfg.Check(cmd.Context(), opts...)
			if err != nil {
				return err
			}
			for _, p := range problems {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			if len(problems) > 0 {
				return fmt.Errorf("%d problem(s) found", len(problems))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok: encrypted images can be decrypted with this configuration")
			return nil
		},
	}
	cmd.Flags().StringVar(&containerd, "containerd-config", "", "containerd config.toml (default "+nodecfg.DefaultContainerdConfig+" when no other config is given)")
	cmd.Flags().StringVar(&crio, "crio-config", "", "CRI-O crio.conf (its decryption_keys_path)")
	return cmd
}

func newRuntimeInstallCmd() *cobra.Command {
	var (
		config string
		in     nodecfg.Install
	)
	cmd := &cobra.Command{
		Use:   "install containerd [--keys-path DIR]",
		Short: "Write coffer's ctd-decoder stream processors into containerd's config (idempotent)",
		Long: `Add (or update) coffer's stream-processor stanza in containerd's config.toml;
every other byte of the file is kept. Stream processors that decrypt the same
media types (imgcrypt's ctd-decoder) are replaced. Creates the key directory
(0700). Re-running merges: options given replace the installed ones, the
others are kept (give --keyprovider-config "" or --per-namespace-keys=false to
remove one). --cri also writes the CRI plugin's settings for Kubernetes'
node key model (image_decryption key_model "node", restrict_oom_score_adj,
optional sandbox image and plain-http mirrors for loopback registries; see
docs/kubernetes.md). --shim writes the guest-pull runtime (io.containerd.coffer.v2,
the "coffer" runtime handler and snapshotter; docs/kubernetes.md "Guest pull").
Restart containerd afterwards.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"containerd"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "containerd" {
				return fmt.Errorf("runtime %q: only containerd is installed this way (CRI-O and podman read decryption_keys_path / --decryption-key): %w", args[0], ErrUsage)
			}
			if !cmd.Flags().Changed("coffer") {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				if in.Coffer, err = filepath.EvalSymlinks(exe); err != nil {
					return err
				}
			}
			for _, m := range in.Mirrors {
				if err := nodecfg.LocalRegistry(m); err != nil {
					return fmt.Errorf("--local-registry: %w: %w", err, ErrUsage)
				}
			}
			// Merge: flags given now replace the installed settings; the
			// others stay as the last install wrote them.
			set := cmd.Flags().Changed
			changed, err := nodecfg.UpdateContainerd(config, func(cur *nodecfg.Install) {
				if set("coffer") || cur.Coffer == "" {
					cur.Coffer = in.Coffer
				}
				if set("keys-path") || cur.KeysPath == "" {
					cur.KeysPath = in.KeysPath
				}
				if set("containerd-root") || cur.ContainerdRoot == "" {
					cur.ContainerdRoot = in.ContainerdRoot
				}
				if set("containerd-address") || cur.Socket == "" {
					cur.Socket = in.Socket
				}
				if set("keyprovider-config") {
					cur.KeyProviderConfig = in.KeyProviderConfig
				}
				if set("per-namespace-keys") {
					cur.PerNamespace = in.PerNamespace
				}
				if set("per-image-keys") {
					cur.PerImage = in.PerImage
				}
				if set("cri") {
					cur.CRI = in.CRI
				}
				if set("sandbox-image") {
					cur.SandboxImage = in.SandboxImage
				}
				if set("local-registry") {
					cur.Mirrors = in.Mirrors
				}
				if set("shim") {
					cur.Shim = in.Shim
				}
				if set("snapshotter-address") || cur.SnapshotterSocket == "" {
					cur.SnapshotterSocket = in.SnapshotterSocket
				}
				if set("shim-config") || cur.ShimConfig == "" {
					cur.ShimConfig = in.ShimConfig
				}
				if set("guest-pull-default") {
					cur.GuestPullDefault = in.GuestPullDefault
				}
			})
			if err != nil {
				return err
			}
			if !changed {
				fmt.Fprintf(cmd.OutOrStdout(), "%s already has these settings: nothing to do\n", config)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote coffer's settings to %s; restart containerd (systemctl restart containerd)\n", config)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&config, "config", nodecfg.DefaultContainerdConfig, "containerd config file")
	f.StringVar(&in.KeysPath, "keys-path", nodecfg.DefaultKeysPath, "node key directory (private keys; <namespace>/ subdirectories with --per-namespace-keys)")
	f.StringVar(&in.Coffer, "coffer", "", "absolute path of the coffer binary containerd runs (default: this binary)")
	f.StringVar(&in.ContainerdRoot, "containerd-root", nodecfg.DefaultContainerdRoot, "containerd's root directory")
	f.StringVar(&in.KeyProviderConfig, "keyprovider-config", "", "ocicrypt keyprovider config for the decoder (OCICRYPT_KEYPROVIDER_CONFIG), e.g. coffer agent's")
	f.BoolVar(&in.PerNamespace, "per-namespace-keys", false, "per-tenant keys: KEYS_PATH/<containerd namespace>/")
	f.BoolVar(&in.PerImage, "per-image-keys", false, "per-tenant keys under Kubernetes: KEYS_PATH/by-image/<registry>/<path prefix>/ serve pulls of references under that prefix")
	f.BoolVar(&in.CRI, "cri", false, "also write the CRI plugin's settings (node key model) for kubelet / crictl")
	f.StringVar(&in.SandboxImage, "sandbox-image", "", "with --cri: CRI's pod sandbox (pause) image")
	f.StringSliceVar(&in.Mirrors, "local-registry", nil, "with --cri: a loopback registry HOST:PORT that CRI reaches over plain http (repeatable)")
	f.BoolVar(&in.Shim, "shim", false, "also write the guest-pull runtime: the coffer snapshotter (proxy plugin) and, with --cri, the runtime handler \"coffer\" (runtime_type io.containerd.coffer.v2)")
	f.StringVar(&in.SnapshotterSocket, "snapshotter-address", nodecfg.DefaultSnapshotterSocket, "with --shim: the socket `coffer runtime snapshotter` serves")
	f.StringVar(&in.ShimConfig, "shim-config", nodecfg.DefaultShimConfig, "with --shim: the shim's configuration file (broker, kernel, guest state)")
	f.BoolVar(&in.GuestPullDefault, "guest-pull-default", false, "with --cri --shim: make the coffer snapshotter CRI's default (containerd 1.6's CRI has no per-runtime snapshotter; every CRI pull on the node is then a guest pull)")
	f.StringVar(&in.Socket, "containerd-address", nodecfg.DefaultContainerdSocket, "containerd's socket (for --per-namespace-keys)")
	return cmd
}
