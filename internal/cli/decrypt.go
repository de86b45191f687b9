package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/transport"
)

func newDecryptCmd() *cobra.Command {
	var (
		reg  registryFlags
		sel  selectFlags
		keys keyFlags
	)
	cmd := &cobra.Command{
		Use:   "decrypt --key KEY... SRC DST",
		Short: "Decrypt image layers; each is verified before anything is written",
		Long: `Decrypt the encrypted layers of SRC with the given private keys and write DST.
Every layer's HMAC and plaintext digest are verified before DST is touched: on a
wrong key, a tampered or truncated blob, DST gets nothing from this run.
Keys: FILE[:pass=PASSWORD|:file=PASSFILE|:fd=N] (PKCS#8, PKCS#1, SEC1, JWK, OpenPGP;
pkcs7 needs the certificate too), provider:NAME (OCICRYPT_KEYPROVIDER_CONFIG).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := parseRefs(args...); err != nil {
				return err
			}
			unw, err := keys.unwrappers(cmd.Context())
			if err != nil {
				return err
			}
			if len(unw) == 0 {
				return fmt.Errorf("no --key given: %w", ErrUsage)
			}
			opts, err := sel.options()
			if err != nil {
				return err
			}
			return imageRun(cmd, args[0], args[1], &reg, opts, false, func(_, _ transport.Reference, topts []transport.Option, iopts []imagecrypt.Option) (int, error) {
				return coffer.Decrypt(cmd.Context(), args[0], args[1], coffer.WithKeys(unw...), coffer.WithTransport(topts...), coffer.WithImageOptions(iopts...))
			})
		},
	}
	reg.AddFlags(cmd.Flags())
	reg.AddTransferFlags(cmd.Flags())
	sel.AddFlags(cmd.Flags())
	keys.addKeys(cmd.Flags(), "private key FILE[:pass=P|:file=F|:fd=N], certificate FILE, or provider:NAME (repeatable)")
	return cmd
}
