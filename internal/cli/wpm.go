package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
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
			if err := requireFlavorFlags(r.Label, r.Input, r.Output, r.FlavorOut, r.BrokerURL, r.AdminKeyFile, r.SigningKeyFile); err != nil {
				return err
			}
			if hc := trustOf(cmd.Context()).httpClient(0); hc != nil { // --cacert for the broker
				k, err := adminclient.LoadKey(r.AdminKeyFile)
				if err != nil {
					return err
				}
				if r.Admin, err = adminclient.New(r.BrokerURL, k, adminclient.WithHTTPClient(hc)); err != nil {
					return err
				}
			}
			f, err := wpm.CreateImageFlavor(cmd.Context(), r)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created flavor %s (label %s): encrypted image %s, signed flavor %s; its key is in the broker (%s)\n",
				f.Meta.ID, f.Meta.Description.Label, r.Output, r.FlavorOut, r.BrokerURL)
			fmt.Fprintln(cmd.OutOrStdout(), f.Meta.ID) // the id alone on stdout (and last), for scripts
			return nil
		},
	}
	fl := create.Flags()
	flavorFlags(fl, &r.Label, &r.Input, &r.Output, &r.FlavorOut, &r.BrokerURL, &r.AdminKeyFile, &r.SigningKeyFile,
		"plaintext image file (e.g. disk.qcow2)", "encrypted image file to write")
	fl.BoolVar(&r.SecLFormat, "secl-format", false, "write SecL's whole-file ISecL-VMC format (in memory, at most 1 GiB) instead of the streaming one")
	var c wpm.ContainerFlavorRequest
	var reg registryFlags
	container := &cobra.Command{
		Use:   "create-container-image-flavor -l LABEL -i SRC -e DST -o FLAVOR --kbs URL --admin-key KEY --signing-key PEM",
		Short: "Create a key in the broker, encrypt a container image with it (provider.isecl layers), write its signed flavor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlavorFlags(c.Label, c.Source, c.Dest, c.FlavorOut, c.BrokerURL, c.AdminKeyFile, c.SigningKeyFile); err != nil {
				return err
			}
			c.TransportOptions = reg.options(cmd.Context())
			c.AdminOptions = adminTrust(cmd.Context())
			f, err := wpm.CreateContainerImageFlavor(cmd.Context(), c)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), f.Meta.ID)
			return nil
		},
	}
	cf := container.Flags()
	flavorFlags(cf, &c.Label, &c.Source, &c.Dest, &c.FlavorOut, &c.BrokerURL, &c.AdminKeyFile, &c.SigningKeyFile,
		"source image (oci:DIR:TAG, docker://…)", "encrypted image to write")
	reg.AddFlags(cf)

	var kbsURL, adminKey string
	wrapped := &cobra.Command{
		Use:   "get-ocicrypt-wrappedkey [--kbs URL --admin-key KEY]",
		Short: `Serve one ocicrypt "cmd" keyprovider request for provider:isecl:any (a new broker key per call)`,
		Long: `The keyprovider SecL's skopeo recipe configures (OCICRYPT_KEYPROVIDER_CONFIG):
  {"key-providers":{"isecl":{"cmd":{"path":"/usr/bin/coffer","args":["wpm","get-ocicrypt-wrappedkey","--kbs","URL","--admin-key","admin.key"]}}}}
  skopeo copy --encryption-key provider:isecl:any oci:app:v1 oci:app:enc
Each keywrap creates a key in the broker (secl/keys/<uuid>) and answers SecL's annotation
{"key_url","wrapped_key","wrap_type":"AES"}. --kbs and --admin-key default to COFFER_KBS_URL
and COFFER_KBS_ADMIN_KEY.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kbsURL, adminKey = orEnv(kbsURL, envKBSURL), orEnv(adminKey, envKBSAdminKey)
			if kbsURL == "" || adminKey == "" {
				return fmt.Errorf("--kbs and --admin-key (or COFFER_KBS_URL, COFFER_KBS_ADMIN_KEY) are required: %w", ErrUsage)
			}
			kp, err := wpm.NewKeyProvider(kbsURL, adminKey, adminTrust(cmd.Context())...)
			if err != nil {
				return err
			}
			if err := keyprovider.ServeCmd(cmd.Context(), kp, cmd.InOrStdin(), cmd.OutOrStdout()); err != nil {
				return fmt.Errorf("keyprovider: %w", err)
			}
			return nil
		},
	}
	addBrokerURLFlag(wrapped.Flags(), &kbsURL, "the image owner's broker URL")
	wrapped.Flags().StringVar(&adminKey, "admin-key", "", "Ed25519 PKCS#8 PEM admin key of the broker")
	cmd.AddCommand(create, container, wrapped)
	return cmd
}

// flavorFlags binds the flags both create-*-flavor verbs take.
func flavorFlags(fl *pflag.FlagSet, label, in, out, flavorOut, kbs, adminKey, signingKey *string, inHelp, outHelp string) {
	fl.StringVarP(label, "label", "l", "", "flavor label")
	fl.StringVarP(in, "image", "i", "", inHelp)
	fl.StringVarP(out, "encrypted", "e", "", outHelp)
	fl.StringVarP(flavorOut, "out", "o", "", "signed flavor JSON to write")
	addBrokerURLFlag(fl, kbs, "the image owner's broker URL")
	fl.StringVar(adminKey, "admin-key", "", "Ed25519 PKCS#8 PEM admin key of the broker")
	fl.StringVar(signingKey, "signing-key", "", "flavor signing key (PEM: RSA, ECDSA or Ed25519)")
}

// requireFlavorFlags is the usage check of the create-*-flavor verbs.
func requireFlavorFlags(values ...string) error {
	for _, v := range values {
		if v == "" {
			return fmt.Errorf("-l, -i, -e, -o, --kbs, --admin-key and --signing-key are all required: %w", ErrUsage)
		}
	}
	return nil
}
