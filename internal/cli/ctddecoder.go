package cli

import (
	"os"
	"os/exec"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/runtime/ctddecoder"
)

func newCtdDecoderCmd() *cobra.Command {
	var (
		keyDirs        []string
		containerdRoot string
		spoolDir       string
		perNamespace   bool
		perImage       bool
		address        string
		snapshotters   []string
	)
	cmd := &cobra.Command{
		Use:   "ctd-decoder [--decryption-keys-path DIR]",
		Short: "containerd stream processor decrypting ocicrypt layers (drop-in for imgcrypt's ctd-decoder)",
		Long: `Run by containerd as a stream processor: the encrypted layer on stdin, the
decrypted layer on stdout, errors on stderr with a non-zero exit. Nothing is
written before the whole layer is authenticated (HMAC and the digest in its
wrapped options): the ciphertext is spooled to an unlinked temp file first.
Keys: the payload on fd 3 (ctr-enc, CRI node key model), the private keys in
--decryption-keys-path, and the key providers of OCICRYPT_KEYPROVIDER_CONFIG.
Without a payload (plain ctr images import|pull) the layer's descriptor is
found in containerd's content store under --containerd-root.
--per-namespace-keys: keys of KEYS_PATH/<namespace>/ serve only the containerd
namespace that is extracting the layer (files directly in KEYS_PATH serve all).
--per-image-keys (Kubernetes: CRI pulls every image in namespace k8s.io): keys
of KEYS_PATH/by-image/<registry>/<path prefix>/ serve only pulls of image
references under that prefix (CRI's snapshot label; see docs/kubernetes.md).
The input media type comes from STREAM_PROCESSOR_MEDIATYPE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := []ctddecoder.Option{
				ctddecoder.WithMediaType(os.Getenv(ctddecoder.MediaTypeEnv)),
				ctddecoder.WithPayloadFile(os.NewFile(3, "payload")),
				ctddecoder.WithKeyProviderConfig(os.Getenv("OCICRYPT_KEYPROVIDER_CONFIG")),
				ctddecoder.WithContainerdRoot(containerdRoot),
				ctddecoder.WithTempDir(spoolDir),
			}
			for _, d := range keyDirs {
				opts = append(opts, ctddecoder.WithKeysPath(d))
			}
			if address != "" {
				opts = append(opts, ctddecoder.WithContainerdAddress(address, snapshotters...))
			}
			if perNamespace {
				opts = append(opts, ctddecoder.WithPerNamespaceKeys())
			}
			if perImage {
				opts = append(opts, ctddecoder.WithPerImageKeys())
			}
			_, err := ctddecoder.Decode(cmd.Context(), cmd.OutOrStdout(), cmd.InOrStdin(), opts...)
			if err != nil {
				holdStdout()
			}
			return err
		},
	}
	cmd.Flags().StringArrayVar(&keyDirs, "decryption-keys-path", nil, "directory of private key files (node key model; repeatable)")
	cmd.Flags().StringVar(&containerdRoot, "containerd-root", "/var/lib/containerd", `containerd's root directory, to find a layer's descriptor when containerd sends no payload ("" disables)`)
	cmd.Flags().BoolVar(&perNamespace, "per-namespace-keys", false, "per-tenant keys: also use KEYS_PATH/<namespace>/ of the containerd namespace extracting the layer (asked from --containerd-address)")
	cmd.Flags().BoolVar(&perImage, "per-image-keys", false, "per-tenant keys under CRI: also use KEYS_PATH/by-image/<registry>/<path prefix>/ of the image reference CRI is pulling (asked from --containerd-address)")
	cmd.Flags().StringVar(&address, "containerd-address", "/run/containerd/containerd.sock", "containerd's socket, asked which layer is being extracted (saves a pass over the layer; needed by --per-namespace-keys; \"\" disables)")
	cmd.Flags().StringArrayVar(&snapshotters, "snapshotter", nil, "snapshotter to search for the extraction (repeatable; default overlayfs and native)")
	cmd.Flags().StringVar(&spoolDir, "spool-dir", "", "directory for the spooled ciphertext (default $TMPDIR or /tmp)")
	return cmd
}

// holdStdout keeps our stdout pipe open a second after we exit, in a
// detached `sleep`. containerd 1.6 reads a processor's exit status in a
// goroutine racing the end of its stdout: when the pipe closes first, it
// checks an empty layer against the diffID and reports `wrong diff id
// calculated on extraction "sha256:e3b0c442…"` instead of our error. With
// the pipe held, the exit status (and our stderr) arrive first.
func holdStdout() {
	p, err := exec.LookPath("sleep")
	if err != nil {
		return
	}
	c := exec.Command(p, "1")
	c.Stdout = os.Stdout
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if c.Start() == nil {
		c.Process.Release()
	}
}
