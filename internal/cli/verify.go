package cli

import (
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func newVerifyCmd() *cobra.Command {
	var (
		reg      registryFlags
		kbs      kbsClientFlags
		integ    integrityFlags
		platform string
	)
	cmd := &cobra.Command{
		Use:   "verify [--policy POLICY] [--kbs URL] IMAGE",
		Short: "Check an image's digest pin, signatures and @sha256 digest without pulling it",
		Long: `Run the checks coffer pull runs before it fetches any layer: the digest pin
the broker holds for IMAGE (with --kbs, after attestation), the signature
policy (--policy FILE or kbs:///REPO/TYPE/TAG) and an @sha256 digest in
IMAGE. Unlike pull, an image nothing vouches for is an error (exit 5).`,
		Example: `  coffer verify --policy policy.json docker://reg.example/app:enc
  coffer verify --kbs http://127.0.0.1:8080 --tee sample docker://127.0.0.1:5000/app:enc`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := transport.Parse(args[0])
			if err != nil {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			c, err := kbs.client(cmd.Context())
			if err != nil {
				return err
			}
			opts := append(integ.options(), coffer.WithTransport(reg.options(cmd.Context())...))
			if c != nil {
				opts = append(opts, coffer.WithClient(c))
			}
			if platform != "" {
				pp, err := v1.ParsePlatform(platform)
				if err != nil {
					return fmt.Errorf("--platform %q: %w: %w", platform, err, ErrUsage)
				}
				opts = append(opts, coffer.WithPlatform(*pp))
			}
			res, err := coffer.Verify(ctx, args[0], opts...)
			if err != nil && c == nil && errors.Is(err, spec.ErrPolicyDenied) {
				return fmt.Errorf("%w (without --kbs the broker's digest pin is not checked: give --kbs URL to check it)", explainPolicy(err))
			}
			if err != nil {
				return explainPolicy(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "verified %s (manifest %s)\n", ref, res.Digest)
			for _, v := range res.Vouched {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", v)
			}
			return nil
		},
	}
	reg.AddFlags(cmd.Flags())
	kbs.AddFlags(cmd.Flags())
	integ.AddPolicyFlags(cmd.Flags()) // verify always requires a pin, signature or digest
	cmd.Flags().StringVar(&platform, "platform", "", "platform OS/ARCH[/VARIANT] to check in an index (default linux/GOARCH)")
	return cmd
}
