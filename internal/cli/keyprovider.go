package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
)

func newKeyproviderCmd() *cobra.Command {
	var kbs kbsClientFlags
	cmd := &cobra.Command{
		Use:   "keyprovider [--kbs URL]",
		Short: `Serve one ocicrypt "cmd" keyprovider request (stdin → stdout) for attestation-agent`,
		Long: `An ocicrypt keyprovider for the attestation-agent scheme, as ocicrypt's "cmd"
transport runs it: one JSON request on stdin, one response on stdout, non-zero
exit on error. keyunwrap fetches the KEK named by the annotation's kid from the
broker (--kbs, after attestation); keywrap reads the KEK from the keypath given
in the encryption parameters. Configure it in OCICRYPT_KEYPROVIDER_CONFIG:
  {"key-providers":{"attestation-agent":{"cmd":{"path":"/usr/bin/coffer","args":["keyprovider","--kbs","http://127.0.0.1:8080"]}}}}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var h keyprovider.Handler = aa.NewHandler(nil)
			c, err := kbs.client(cmd.Context())
			if err != nil {
				return err
			}
			if c != nil {
				h = aa.NewHandler(c)
			}
			if err := keyprovider.ServeCmd(cmd.Context(), h, cmd.InOrStdin(), cmd.OutOrStdout()); err != nil {
				return fmt.Errorf("keyprovider: %w", err)
			}
			return nil
		},
	}
	kbs.AddFlags(cmd.Flags())
	return cmd
}
