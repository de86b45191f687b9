package cli

import (
	"crypto"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func newSignCmd() *cobra.Command {
	var (
		reg      registryFlags
		keyFile  string
		identity string
		referrer bool
		bundle   bool
	)
	cmd := &cobra.Command{
		Use:   "sign --key KEY IMAGE",
		Short: "Sign an image's manifest digest, cosign-compatibly (verifiable by cosign verify --key)",
		Long: `Sign the manifest digest IMAGE resolves to with KEY and store the signature
as cosign does: a simple signing payload in the image tagged sha256-<hex>.sig
of the same repository (or OCI layout); signatures already there are kept.
KEY: cosign's encrypted key (cosign generate-key-pair; password in
$COSIGN_PASSWORD, as cosign reads it) or a PEM EC, RSA or Ed25519 private key.
With --bundle, write cosign v3's format instead: a sigstore bundle v0.3 (a
DSSE envelope over an in-toto statement naming the digest and the identity,
with the key's hint; no transparency log entry) attached as an OCI 1.1
referrer, or the referrers tag fallback (registries only).
Enforce it on the trusted side with a sigstoreSigned policy (--policy).`,
		Example: `  COSIGN_PASSWORD=… coffer sign --key cosign.key docker://reg.example/app:enc
  coffer sign --key ec.pem --identity reg.example/app:v1 oci:app:v1
  coffer sign --bundle --key cosign.key docker://reg.example/app:enc`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := transport.Parse(args[0])
			if err != nil {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			if keyFile == "" {
				return fmt.Errorf("--key is required: %w", ErrUsage)
			}
			m, err := keys.LoadMaterial(keyFile, []byte(os.Getenv("COSIGN_PASSWORD")))
			if err != nil {
				return err
			}
			signer, ok := m.Private.(crypto.Signer)
			if !ok {
				return fmt.Errorf("%s holds no signing key (want a cosign, EC, RSA or Ed25519 private key): %w", keyFile, spec.ErrUnsupported)
			}
			opts := []imagepolicy.SignOption{imagepolicy.WithSignTransport(reg.options(cmd.Context())...)}
			if identity != "" {
				opts = append(opts, imagepolicy.WithSignedIdentity(identity))
			}
			if referrer {
				opts = append(opts, imagepolicy.WithReferrer())
			}
			if bundle {
				opts = append(opts, imagepolicy.WithBundle())
			}
			s, err := imagepolicy.Sign(cmd.Context(), ref, signer, opts...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s (%s as %s) into %s\n", ref, s.Digest, s.Identity, s.At)
			return nil
		},
	}
	reg.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&keyFile, "key", "", "private key: cosign.key (password in $COSIGN_PASSWORD) or PEM EC/RSA/Ed25519")
	cmd.Flags().BoolVar(&referrer, "referrer", false, "store the signature as an OCI 1.1 referrer (cosign's --registry-referrers-mode=oci-1-1) instead of the .sig tag")
	cmd.Flags().BoolVar(&bundle, "bundle", false, "write a sigstore bundle v0.3 (cosign v3's format) as an OCI 1.1 referrer instead of a simple signing payload")
	cmd.Flags().StringVar(&identity, "identity", "", "docker-reference to sign the digest as (default: IMAGE's REGISTRY/REPO:TAG; required for oci:)")
	return cmd
}
