package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/token"
)

// newKBSAdminTokenCmd prints a signed admin token, for clients (newer
// trustee kbs-client builds) that take a pre-issued token instead of a key.
func newKBSAdminTokenCmd() *cobra.Command {
	var (
		role     string
		allow    []string
		ttl      time.Duration
		reusable bool
	)
	cmd := &cobra.Command{
		Use:   "admin-token --admin-key admin.key [--role R] [--allow-path P]... [--ttl 2h] [--reusable]",
		Short: "Print an Ed25519-signed admin token (for clients that take a token, not a key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyFile := kbsFlag(cmd, "admin-key", "COFFER_KBS_ADMIN_KEY")
			if keyFile == "" {
				return fmt.Errorf("--admin-key (or COFFER_KBS_ADMIN_KEY) is required: %w", ErrUsage)
			}
			if ttl <= 0 || ttl > 24*time.Hour {
				return fmt.Errorf("--ttl must be between 1s and 24h: %w", ErrUsage)
			}
			for _, p := range allow {
				if err := token.ValidatePathPattern(p); err != nil {
					return fmt.Errorf("--allow-path: %w", err)
				}
			}
			key, err := adminclient.LoadKey(keyFile)
			if err != nil {
				return err
			}
			sign := token.SignAdminClaims
			if reusable {
				sign = token.SignAdminReusable
			}
			fmt.Fprintln(cmd.OutOrStdout(), sign(key, token.AdminClaims{Role: role, AllowPaths: allow}, time.Now(), ttl))
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "role claim (for brokers that require one, or scope roles with --admin-acl)")
	cmd.Flags().StringSliceVar(&allow, "allow-path", nil, "scope the token to resource paths matching this pattern, e.g. tenant-a/*/* (repeatable); a scoped token cannot change policies")
	cmd.Flags().DurationVar(&ttl, "ttl", 2*time.Hour, "token lifetime")
	cmd.Flags().BoolVar(&reusable, "reusable", false, "no jti: the token may make several writes until it expires (by default a token buys one write); for --admin-token on the admin verbs")
	return cmd
}
