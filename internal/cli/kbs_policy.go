package cli

// The broker's policy verbs: resource and attestation policies, reference values.

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/token"
)

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
