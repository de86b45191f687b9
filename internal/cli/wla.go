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
	var certs, brokerKeys []string
	decrypt := &cobra.Command{
		Use:   "decrypt-image --wls https://HOST --image-id ID --tpm /dev/tpmrm0|tcp://HOST:PORT --flavor-signer-cert CERT --broker-key PUB --expect-label L|--expect-flavor-id ID -i ENCRYPTED -o OUT",
		Short: "Attest this host's TPM, get the image key through the WLS, decrypt the image",
		Long: `Asks the workload service for a broker nonce, answers with a TPM quote and the TPM binding
key certified by the same attestation key, and receives the image key wrapped to the binding key;
the TPM unwraps it (TPM2_RSA_Decrypt). The key stays in memory only. OUT appears only once the
whole image authenticated and matched the flavor's digest.

The host trusts nothing the network says without an anchor it holds: the flavor must verify with
--flavor-signer-cert and be the one expected (--expect-flavor-id or --expect-label), and the key
must come with the broker's transfer proof for this host's own attestation, signed by --broker-key
(the public part of the broker's --token-key).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.WLS == "" || r.ImageID == "" || r.Input == "" || r.Output == "" {
				return fmt.Errorf("--wls, --image-id, -i and -o are required: %w", ErrUsage)
			}
			if len(certs) == 0 {
				return fmt.Errorf("no trust anchor for flavors: --flavor-signer-cert CERT is required (this host refuses flavors it cannot verify): %w", ErrUsage)
			}
			if len(brokerKeys) == 0 {
				return fmt.Errorf("no trust anchor for keys: --broker-key PUB is required (the public part of the broker's --token-key; keys without its transfer proof are refused): %w", ErrUsage)
			}
			if r.Trust.FlavorID == "" && r.Trust.Label == "" {
				return fmt.Errorf("--expect-flavor-id or --expect-label is required (the flavor this host expects for the image): %w", ErrUsage)
			}
			if err := tpm.CheckAddr(r.TPMAddr); err != nil {
				return fmt.Errorf("--tpm: %w: %w", err, ErrUsage)
			}
			var err error
			if r.Trust.Signers, err = flavor.LoadSigners(certs...); err != nil {
				return err
			}
			if r.Trust.BrokerKeys, err = wla.LoadBrokerKeys(brokerKeys...); err != nil {
				return err
			}
			if r.LoopbackHTTP {
				slog.Warn("INSECURE: --insecure-loopback-http: talking plain http to a loopback WLS (tests and demos only)")
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
	fl.StringVar(&r.WLS, "wls", "", "workload service URL (https)")
	fl.StringVar(&r.ImageID, "image-id", "", "image id")
	addTPMFlag(fl, &r.TPMAddr)
	fl.StringVarP(&r.Input, "in", "i", "", "encrypted image file")
	fl.StringVarP(&r.Output, "out", "o", "", "decrypted image file to write")
	fl.StringSliceVar(&certs, "flavor-signer-cert", nil, "PEM certificate of a trusted flavor signer (repeatable; required)")
	fl.StringSliceVar(&brokerKeys, "broker-key", nil, "PEM public key (or certificate) of the broker's token key: keys must carry its transfer proof (repeatable; required)")
	fl.StringVar(&r.Trust.FlavorID, "expect-flavor-id", "", "the flavor id this host expects for the image")
	fl.StringVar(&r.Trust.Label, "expect-label", "", "the flavor label this host expects for the image")
	fl.BoolVar(&r.LoopbackHTTP, "insecure-loopback-http", false, "TESTS/DEMOS ONLY: allow an http:// WLS on a loopback address")
	var kc wla.KeyproviderConfig
	var kpBrokerKeys []string
	kp := &cobra.Command{
		Use:   "keyprovider --wls https://HOST --tpm ADDR --broker-key PUB [--listen unix:PATH | --listen HOST:PORT --tcp-token-file FILE]",
		Short: "Serve the ocicrypt keyprovider (gRPC) that unwraps provider.isecl layers through the WLS and this TPM",
		Long: `For CRI-O/containerd on the host (OCICRYPT_KEYPROVIDER_CONFIG):
  {"key-providers":{"isecl":{"grpc":"unix:///run/coffer/wla-keyprovider.sock"}}}
Each keyunwrap attests this host's TPM to the owner's broker through the WLS and unwraps the
layer key inside the TPM; keys stay in memory (--key-cache), never on disk. The default listener
is a unix socket (0600, owner only); TCP needs --tcp-token-file (callers send
"authorization: Bearer <token>" gRPC metadata).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kc.WLS == "" {
				return fmt.Errorf("--wls is required: %w", ErrUsage)
			}
			if len(kpBrokerKeys) == 0 {
				return fmt.Errorf("no trust anchor for keys: --broker-key PUB is required (the public part of the broker's --token-key): %w", ErrUsage)
			}
			var err error
			if kc.BrokerKeys, err = wla.LoadBrokerKeys(kpBrokerKeys...); err != nil {
				return err
			}
			return wla.ServeKeyprovider(cmd.Context(), kc, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)), nil)
		},
	}
	kp.Flags().StringVar(&kc.WLS, "wls", "", "workload service URL (https)")
	kp.Flags().StringVar(&kc.Listen, "listen", wla.DefaultKeyproviderSocket, "unix:PATH (socket 0600) or HOST:PORT (needs --tcp-token-file)")
	kp.Flags().StringVar(&kc.TCPTokenFile, "tcp-token-file", "", "file (mode 0600) holding the bearer token TCP callers must send")
	kp.Flags().StringSliceVar(&kpBrokerKeys, "broker-key", nil, "PEM public key (or certificate) of the broker's token key (repeatable; required)")
	kp.Flags().BoolVar(&kc.LoopbackHTTP, "insecure-loopback-http", false, "TESTS/DEMOS ONLY: allow an http:// WLS on a loopback address")
	kp.Flags().DurationVar(&kc.CacheTTL, "key-cache", 30*time.Second, "keep an unwrapped layer key in memory this long, so one attestation serves an image's layers (0: none)")
	addTPMFlag(kp.Flags(), &kc.TPMAddr)
	cmd.AddCommand(decrypt, kp)
	return cmd
}
