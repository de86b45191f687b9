package cli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/keywrap/keygen"
)

func newKeygenCmd() *cobra.Command {
	var typ, out, kid string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE [--type mlkem768|ec-p256|rsa-3072]",
		Short: "Make a recipient key pair (ML-KEM-768 post-quantum by default)",
		Long: `Write a new private key to FILE (0600) and its public key to FILE.pub; neither
may exist (keys are never overwritten). mlkem768: ML-KEM-768 (FIPS 203) AKP
JWKs; encrypt with --recipient mlkem:FILE.pub, decrypt with --key FILE. ec-p256,
rsa-3072: PEM; --recipient jwe:FILE.pub.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE is required: %w", ErrUsage)
			}
			if !slices.Contains(keygen.Types, typ) {
				return fmt.Errorf("--type %q: want %s: %w", typ, strings.Join(keygen.Types, ", "), ErrUsage)
			}
			p, err := keygen.Generate(cmd.Context(), typ, keygen.WithKeyID(kid))
			if err != nil {
				return err
			}
			defer p.Clear()
			if err := p.Write(out, out+".pub"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (private, 0600) and %s.pub (recipient)\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&typ, "type", keygen.MLKEM768, "key type: "+strings.Join(keygen.Types, ", "))
	cmd.Flags().StringVarP(&out, "out", "o", "", "private key file (the public key goes to FILE.pub)")
	cmd.Flags().StringVar(&kid, "kid", "", "key id written into an ML-KEM key (and the JWE header of its entries)")
	return cmd
}
