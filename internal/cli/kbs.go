package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
)

// newKBSCmd is `coffer kbs`: the key broker and its admin verbs. The
// client flags --url, --admin-key, --admin-token (env COFFER_KBS_URL,
// COFFER_KBS_ADMIN_KEY, COFFER_KBS_ADMIN_TOKEN) go on the verbs that use
// them (addKBSClientFlags, kbs_flags.go).
func newKBSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kbs",
		Short: "Run and administer a key broker (Confidential Containers KBS protocol 0.4.0)",
	}
	cmd.AddCommand(
		newKBSServeCmd(), newKBSMigrateCmd(), newKBSRotateKEKCmd(), newKBSKeygenAdminCmd(), newKBSAdminPublicKeyCmd(), newKBSListResourcesCmd(),
		newKBSSetResourceCmd(), newKBSDeleteResourceCmd(),
		newKBSSetResourcePolicyCmd(), newKBSGetResourcePolicyCmd(),
		newKBSSetAttestationPolicyCmd(), newKBSSetReferenceValueCmd(),
		newKBSVerifyEvidenceCmd(), newKBSPinCmd(),
		// client verbs (attest, get-resource) register here:
	)
	return cmd
}

// kbsFlag returns a kbs client flag, falling back to its environment variable.
func kbsFlag(cmd *cobra.Command, name, env string) string {
	v, _ := cmd.Flags().GetString(name)
	return orEnv(v, env)
}

// kbsAdmin builds an admin client from --url and --admin-key (or a
// pre-issued --admin-token).
func kbsAdmin(cmd *cobra.Command) (*adminclient.Client, error) {
	url := brokerURL(cmd.Flags())
	keyFile, tokFile := kbsFlag(cmd, "admin-key", envKBSAdminKey), kbsFlag(cmd, "admin-token", envKBSAdminToken)
	switch {
	case url == "" || keyFile == "" && tokFile == "":
		return nil, fmt.Errorf("--url and --admin-key or --admin-token (or COFFER_KBS_URL, COFFER_KBS_ADMIN_KEY, COFFER_KBS_ADMIN_TOKEN) are required: %w", ErrUsage)
	case keyFile != "" && tokFile != "":
		return nil, fmt.Errorf("give --admin-key or --admin-token, not both: %w", ErrUsage)
	case tokFile != "":
		tok, err := attest.ReadBounded(tokFile, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		return adminclient.NewWithToken(url, string(tok), adminTrust(cmd.Context())...)
	}
	key, err := loadAdminKey(cmd.Flags(), keyFile)
	if err != nil {
		return nil, err
	}
	return adminclient.New(url, key, adminTrust(cmd.Context())...)
}
