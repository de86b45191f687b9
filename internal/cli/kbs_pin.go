package cli

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/transport"
)

func newKBSPinCmd() *cobra.Command {
	var (
		reg    registryFlags
		repo   string
		digest string
	)
	cmd := &cobra.Command{
		Use:   "pin [--digest sha256:…] IMAGE",
		Short: "Record IMAGE's manifest digest in the broker (what coffer pull --kbs enforces)",
		Long: `Pin what IMAGE holds now at REPO/image_pin/<sha256 of its name>. coffer encrypt
--kbs pins by itself; use this for images encrypted before, or after rekey (which
rewrites the manifest). With --digest the image must hold exactly that digest;
without it the registry is trusted at this moment: compare the digest printed.`,
		Example: `  coffer kbs pin --url … --admin-key admin.key --digest sha256:… docker://reg.example/app:enc`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := transport.Parse(args[0])
			if err != nil {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			var want *v1.Hash
			if digest != "" {
				h, err := v1.NewHash(digest)
				if err != nil {
					return fmt.Errorf("--digest %q: %w: %w", digest, err, ErrUsage)
				}
				want = &h
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			p, err := imagepolicy.PinImage(cmd.Context(), ref, c, repo, want, reg.options(cmd.Context())...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %s at %s in the broker (kbs:///%s)\n", p.Pin.Reference, p.Pin.Digest, p.Path)
			return nil
		},
	}
	reg.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&repo, "repo", protocol.DefaultResourceRepo, "broker repo of the pin (the repo of the image's --key-id)")
	cmd.Flags().StringVar(&digest, "digest", "", "the manifest digest IMAGE must hold (recommended)")
	return cmd
}
