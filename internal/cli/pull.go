package cli

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/transport"
	"github.com/coffer-dev/coffer/unpack"
)

func newPullCmd() *cobra.Command {
	var (
		reg      registryFlags
		keys     keyFlags
		kbs      kbsClientFlags
		integ    integrityFlags
		platform string
		maxFile  = sizeFlag{unpack.DefaultMaxFileSize}
		maxTotal = sizeFlag{unpack.DefaultMaxRootfsSize}
	)
	cmd := &cobra.Command{
		Use:   "pull [--kbs URL] [--key KEY] IMAGE ROOTFS",
		Short: "Fetch, decrypt, verify and unpack an image into a new root file system",
		Long: `Pull IMAGE and unpack it into ROOTFS (which must not exist), with its image
config at ROOTFS.config.json. Layer keys are unwrapped with local --key files
first, then through the key broker (--kbs) after remote attestation, at most
once per pull. Every layer is authenticated (HMAC, digest, diffID) before it
is applied; on any failure nothing is left at ROOTFS. Before any of that, the
manifest must match the digest pin the broker holds for IMAGE (with --kbs),
satisfy --policy, and match an @sha256 digest in IMAGE; when nothing vouches
for it pull warns, or refuses under --require-signature.`,
		Example: `  coffer pull --kbs http://127.0.0.1:8080 docker://127.0.0.1:5000/app:enc ./rootfs
  coffer pull --key priv.pem oci:app:enc ./rootfs
  coffer pull --policy policy.json docker://reg.example/app@sha256:… ./rootfs`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := transport.Parse(args[0])
			if err != nil {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			unw, err := keys.unwrappers(ctx)
			if err != nil {
				return err
			}
			bc, err := kbs.client(ctx) // nil without --kbs
			if err != nil {
				return err
			}
			var popts []coffer.Option
			if platform != "" {
				pl, err := v1.ParsePlatform(platform)
				if err != nil {
					return fmt.Errorf("--platform %q: %w: %w", platform, err, ErrUsage)
				}
				popts = append(popts, coffer.WithPlatform(*pl))
			}
			p := newProgress(cmd.ErrOrStderr(), reg.progress)
			opts := append(append(popts, integ.options()...), coffer.WithKeys(unw...), coffer.WithTransport(reg.options(cmd.Context())...),
				coffer.WithPullOptions(pull.WithUnpack(unpack.WithMaxFileSize(maxFile.n), unpack.WithMaxRootfsSize(maxTotal.n)), pull.WithBlobProgress(p.blob)))
			if bc != nil {
				opts = append(opts, coffer.WithClient(bc))
			}
			err = coffer.Pull(ctx, args[0], args[1], opts...)
			p.finish()
			if err != nil {
				return explainPolicy(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %s into %s (config: %s.config.json)\n", ref, args[1], args[1])
			return nil
		},
	}
	reg.AddFlags(cmd.Flags())
	reg.AddTransferFlags(cmd.Flags())
	keys.addKeys(cmd.Flags(), "local private key FILE[:pass=…] tried before the broker (repeatable)")
	kbs.AddFlags(cmd.Flags())
	integ.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&platform, "platform", "", "platform OS/ARCH[/VARIANT] to pull from an index (default linux/GOARCH)")
	cmd.Flags().Var(&maxFile, "max-file-size", "largest file the image may unpack, holes of sparse files included")
	cmd.Flags().Var(&maxTotal, "max-rootfs-size", "largest total of the image's files, holes included")
	return cmd
}
