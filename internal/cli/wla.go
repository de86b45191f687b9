package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wla"
	"github.com/coffer-dev/coffer/tpm"
)

func newWLACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wla",
		Short: "Host side (Intel SecL's Workload Agent): get image keys sealed to this host's TPM",
	}
	var r wla.DecryptRequest
	var certs []string
	decrypt := &cobra.Command{
		Use:   "decrypt-image --wls URL --image-id ID --tpm /dev/tpmrm0|tcp://HOST:PORT -i ENCRYPTED -o OUT",
		Short: "Attest this host's TPM, get the image key through the WLS, decrypt the image",
		Long: `Asks the workload service for a broker nonce, answers with a TPM quote and the TPM binding
key certified by the same attestation key, and receives the image key wrapped to the binding key;
the TPM unwraps it (TPM2_RSA_Decrypt). The key stays in memory only. OUT appears only once the
whole image authenticated and matched the flavor's digest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.WLS == "" || r.ImageID == "" || r.Input == "" || r.Output == "" {
				return fmt.Errorf("--wls, --image-id, -i and -o are required: %w", ErrUsage)
			}
			if err := tpm.CheckAddr(r.TPMAddr); err != nil {
				return fmt.Errorf("--tpm: %w: %w", err, ErrUsage)
			}
			if len(certs) > 0 {
				var err error
				if r.Signers, err = flavor.LoadSigners(certs...); err != nil {
					return err
				}
			}
			r.HTTP = trustOf(cmd.Context()).httpClient(2 * time.Minute)
			f, err := wla.DecryptImage(cmd.Context(), r)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "decrypted %s (flavor %s, label %s)\n", r.Output, f.Meta.ID, f.Meta.Description.Label)
			return nil
		},
	}
	fl := decrypt.Flags()
	fl.StringVar(&r.WLS, "wls", "", "workload service URL")
	fl.StringVar(&r.ImageID, "image-id", "", "image id")
	addTPMFlag(fl, &r.TPMAddr)
	fl.StringVarP(&r.Input, "in", "i", "", "encrypted image file")
	fl.StringVarP(&r.Output, "out", "o", "", "decrypted image file to write")
	fl.StringSliceVar(&certs, "flavor-signer-cert", nil, "also verify the flavor with these signer certificates (PEM)")
	var kc wla.KeyproviderConfig
	kp := &cobra.Command{
		Use:   "keyprovider --wls URL --tpm ADDR [--listen 127.0.0.1:50051]",
		Short: "Serve the ocicrypt keyprovider (gRPC) that unwraps provider.isecl layers through the WLS and this TPM",
		Long: `For CRI-O/containerd on the host (OCICRYPT_KEYPROVIDER_CONFIG):
  {"key-providers":{"isecl":{"grpc":"127.0.0.1:50051"}}}
Each keyunwrap attests this host's TPM to the owner's broker through the WLS and unwraps the
layer key inside the TPM; keys stay in memory (--key-cache), never on disk.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kc.WLS == "" {
				return fmt.Errorf("--wls is required: %w", ErrUsage)
			}
			return wla.ServeKeyprovider(cmd.Context(), kc, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)), nil)
		},
	}
	kp.Flags().StringVar(&kc.WLS, "wls", "", "workload service URL")
	kp.Flags().StringVar(&kc.Listen, "listen", "127.0.0.1:50051", "gRPC address to serve on")
	kp.Flags().DurationVar(&kc.CacheTTL, "key-cache", 30*time.Second, "keep an unwrapped layer key in memory this long, so one attestation serves an image's layers (0: none)")
	addTPMFlag(kp.Flags(), &kc.TPMAddr)
	cmd.AddCommand(decrypt, kp)
	return cmd
}
