package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/token"
)

// newKBSCmd is `coffer kbs`: the key broker and its admin verbs. The
// persistent flags --url and --admin-key (env COFFER_KBS_URL,
// COFFER_KBS_ADMIN_KEY) are shared by every client and admin verb.
func newKBSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kbs",
		Short: "Run and administer a key broker (Confidential Containers KBS protocol 0.4.0)",
	}
	cmd.PersistentFlags().String("url", "", "broker URL (env COFFER_KBS_URL)")
	cmd.PersistentFlags().String("admin-key", "", "Ed25519 PKCS#8 PEM admin private key (env COFFER_KBS_ADMIN_KEY)")
	cmd.PersistentFlags().String("admin-token", "", "instead of --admin-key: FILE holding an admin token from `coffer kbs admin-token` (e.g. scoped with --allow-path; env COFFER_KBS_ADMIN_TOKEN)")
	cmd.AddCommand(
		newKBSServeCmd(), newKBSMigrateCmd(), newKBSRotateKEKCmd(), newKBSKeygenAdminCmd(), newKBSListResourcesCmd(),
		newKBSSetResourceCmd(), newKBSDeleteResourceCmd(),
		newKBSSetResourcePolicyCmd(), newKBSGetResourcePolicyCmd(),
		newKBSSetAttestationPolicyCmd(), newKBSSetReferenceValueCmd(),
		newKBSVerifyEvidenceCmd(), newKBSPinCmd(),
		// client verbs (attest, get-resource) register here:
	)
	return cmd
}

// kbsFlag returns a persistent kbs flag, falling back to its environment variable.
func kbsFlag(cmd *cobra.Command, name, env string) string {
	if v, _ := cmd.Flags().GetString(name); v != "" {
		return v
	}
	return os.Getenv(env)
}

// kbsAdmin builds an admin client from --url and --admin-key (or a
// pre-issued --admin-token).
func kbsAdmin(cmd *cobra.Command) (*adminclient.Client, error) {
	url := kbsFlag(cmd, "url", "COFFER_KBS_URL")
	keyFile, tokFile := kbsFlag(cmd, "admin-key", "COFFER_KBS_ADMIN_KEY"), kbsFlag(cmd, "admin-token", "COFFER_KBS_ADMIN_TOKEN")
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
		return adminclient.NewWithToken(url, string(tok))
	}
	key, err := adminclient.LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	return adminclient.New(url, key)
}

func newKBSSetResourceCmd() *cobra.Command {
	var path, file string
	cmd := &cobra.Command{
		Use:   "set-resource",
		Short: "Upload a resource (e.g. an image key) to the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" || file == "" {
				return fmt.Errorf("--path and --resource-file are required: %w", ErrUsage)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			var data []byte
			if file == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("reading resource: %w", err)
			}
			return c.SetResource(cmd.Context(), path, data)
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	cmd.Flags().StringVar(&file, "resource-file", "", "file holding the resource (- for stdin)")
	return cmd
}

func newKBSDeleteResourceCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "delete-resource",
		Short: "Delete a resource from the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return fmt.Errorf("--path is required: %w", ErrUsage)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.DeleteResource(cmd.Context(), path)
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	return cmd
}

func newKBSSetResourcePolicyCmd() *cobra.Command {
	var file string
	var allowAll, denyAll, affirming bool
	cmd := &cobra.Command{
		Use:   "set-resource-policy",
		Short: "Set the resource policy (--policy-file | --allow-all | --deny-all | --affirming)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var src []byte
			var err error
			switch {
			case allowAll:
				src = []byte(policy.ResourceAllowAll)
			case denyAll:
				src = []byte(policy.ResourceDenyAll)
			case affirming:
				src = []byte(policy.ResourceAffirming)
			case file != "":
				if src, err = os.ReadFile(file); err != nil {
					return fmt.Errorf("reading policy: %w", err)
				}
			default:
				return fmt.Errorf("one of --policy-file, --allow-all, --deny-all, --affirming is required: %w", ErrUsage)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.SetResourcePolicy(cmd.Context(), src)
		},
	}
	cmd.Flags().StringVar(&file, "policy-file", "", "Rego policy (package policy, boolean allow)")
	cmd.Flags().BoolVar(&allowAll, "allow-all", false, "release every resource to any valid attestation token")
	cmd.Flags().BoolVar(&denyAll, "deny-all", false, "release nothing")
	cmd.Flags().BoolVar(&affirming, "affirming", false, "release only to tokens with EAR status affirming (the default)")
	cmd.MarkFlagsMutuallyExclusive("policy-file", "allow-all", "deny-all", "affirming")
	return cmd
}

func newKBSGetResourcePolicyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get-resource-policy",
		Short: "Print the broker's resource policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			src, err := c.GetResourcePolicy(cmd.Context())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(src)
			return err
		},
	}
}

func newKBSSetAttestationPolicyCmd() *cobra.Command {
	var file, id string
	cmd := &cobra.Command{
		Use:   "set-attestation-policy",
		Short: "Set the attestation policy (Rego producing the EAR trust vector)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("--policy-file is required: %w", ErrUsage)
			}
			src, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("reading policy: %w", err)
			}
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.SetAttestationPolicy(cmd.Context(), id, src)
		},
	}
	cmd.Flags().StringVar(&file, "policy-file", "", "Rego attestation policy")
	cmd.Flags().StringVar(&id, "id", token.DefaultAppraisalPolicy, "policy id")
	return cmd
}

func newKBSSetReferenceValueCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-reference-value NAME VALUE...",
		Short: "Set the reference values called NAME (sample RVPS format)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			return c.SetReferenceValue(cmd.Context(), args[0], args[1:])
		},
	}
}
