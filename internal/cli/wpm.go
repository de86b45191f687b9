package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/secl/wpm"
)

func newWPMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wpm",
		Short: "Image owner (Intel SecL's Workload Policy Manager): encrypt images, write signed flavors",
	}
	var r wpm.ImageFlavorRequest
	create := &cobra.Command{
		Use:   "create-image-flavor -l LABEL -i IMAGE -e ENCRYPTED -o FLAVOR --kbs URL --admin-key KEY --signing-key PEM",
		Short: "Create a key in the broker, encrypt a VM/file image with it, and write its signed flavor",
		Long: `Creates a fresh 32-byte key in the broker (resource secl/keys/<uuid>, create-only),
encrypts IMAGE to ENCRYPTED in bounded memory (Tink's AES256_GCM_HKDF_1MB streaming format)
and writes the signed image flavor (SecL's JSON, signature over its canonical form) to FLAVOR.
Both files are committed atomically; the flavor id is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.Label == "" || r.Input == "" || r.Output == "" || r.FlavorOut == "" || r.BrokerURL == "" || r.AdminKeyFile == "" || r.SigningKeyFile == "" {
				return fmt.Errorf("-l, -i, -e, -o, --kbs, --admin-key and --signing-key are all required: %w", ErrUsage)
			}
			f, err := wpm.CreateImageFlavor(cmd.Context(), r)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), f.Meta.ID)
			return nil
		},
	}
	fl := create.Flags()
	fl.StringVarP(&r.Label, "label", "l", "", "flavor label")
	fl.StringVarP(&r.Input, "image", "i", "", "plaintext image file (e.g. disk.qcow2)")
	fl.StringVarP(&r.Output, "encrypted", "e", "", "encrypted image file to write")
	fl.StringVarP(&r.FlavorOut, "out", "o", "", "signed flavor JSON to write")
	fl.StringVar(&r.BrokerURL, "kbs", "", "the image owner's broker URL")
	fl.StringVar(&r.AdminKeyFile, "admin-key", "", "Ed25519 PKCS#8 PEM admin key of the broker")
	fl.StringVar(&r.SigningKeyFile, "signing-key", "", "flavor signing key (PEM: RSA, ECDSA or Ed25519)")
	cmd.AddCommand(create)
	return cmd
}
