package cli

import (
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/tpm"
)

func newTPMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tpm",
		Short: "TPM 2.0: the attestation key a broker must know",
	}
	var addr string
	akPublic := &cobra.Command{
		Use:   "ak-public [--tpm /dev/tpmrm0|tcp://HOST:PORT]",
		Short: "Print the TPM's attestation key: std base64 PKIX DER, as in its evidence's ak_public",
		Long: `Print the public key of the attestation key (AK) coffer quotes with: the persistent
key at 0x81010002 when one is provisioned there (CoCo's attester uses it), otherwise
a primary key of the endorsement hierarchy from go-tpm-tools' AK template, which the
same TPM re-creates identically every time. A broker trusts TPM evidence only from a
registered AK:

  coffer kbs set-reference-value tpm_ak_public "$(coffer tpm ak-public)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := tpm.CheckAddr(addr); err != nil {
				return fmt.Errorf("--tpm: %w: %w", err, ErrUsage)
			}
			t, err := tpm.Open(cmd.Context(), addr)
			if err != nil {
				return err
			}
			defer t.Close()
			der, err := t.AKPublic(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(der))
			return nil
		},
	}
	addTPMFlag(akPublic.Flags(), &addr)
	cmd.AddCommand(akPublic)
	return cmd
}
