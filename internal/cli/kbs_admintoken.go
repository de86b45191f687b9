package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

// newKBSAdminTokenCmd prints a signed admin token, for clients (newer
// trustee kbs-client builds) that take a pre-issued token instead of a key.
// With --out it writes the token 0600 instead (a shell redirect would leave
// a bearer credential 0644), create-only unless --force, as keygen-admin.
func newKBSAdminTokenCmd() *cobra.Command {
	var (
		role     string
		allow    []string
		ttl      time.Duration
		reusable bool
		out      string
		force    bool
	)
	cmd := &cobra.Command{
		Use:   "admin-token --admin-key admin.key [--role R] [--allow-path P]... [--ttl 2h] [--reusable] [--out FILE [--force]]",
		Short: "Print an Ed25519-signed admin token (for clients that take a token, not a key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyFile := kbsFlag(cmd, "admin-key", envKBSAdminKey)
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
			key, err := loadAdminKey(cmd.Flags(), keyFile)
			if err != nil {
				return err
			}
			// Refuse an existing --out before signing: a typo must not
			// clobber the admin key (or another token) the name points at.
			if out != "" && !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists (use --force to replace it): %w", out, spec.ErrExists)
				}
			}
			tok, err := token.SignAdminWith(key, token.AdminClaims{Role: role, AllowPaths: allow}, time.Now(), ttl, reusable)
			if err != nil {
				return err
			}
			if out == "" {
				fmt.Fprintln(cmd.OutOrStdout(), tok)
				return nil
			}
			opts := []atomicfile.Option{atomicfile.Mode(0o600)}
			if !force {
				opts = append(opts, atomicfile.NoReplace())
			}
			if err := atomicfile.Write(out, []byte(tok+"\n"), opts...); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("%s exists (use --force to replace it): %w", out, spec.ErrExists)
				}
				return fmt.Errorf("writing admin token: %w", err)
			}
			cmd.Printf("wrote admin token to %s (0600, valid %s)\n", out, ttl)
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "role claim (for brokers that require one, or scope roles with --admin-acl)")
	cmd.Flags().StringSliceVar(&allow, "allow-path", nil, "scope the token to resource paths matching this pattern, e.g. tenant-a/*/* (repeatable); a scoped token cannot change policies")
	cmd.Flags().DurationVar(&ttl, "ttl", 2*time.Hour, "token lifetime")
	cmd.Flags().StringVar(&out, "out", "", "write the token to FILE (0600, atomically) instead of stdout; an existing FILE is refused without --force")
	cmd.Flags().BoolVar(&force, "force", false, "with --out: replace an existing FILE (it ends up 0600 whatever its mode was)")
	cmd.Flags().BoolVar(&reusable, "reusable", false, "no jti: the token may make several writes until it expires (by default a token buys one write); for --admin-token on the admin verbs")
	return cmd
}
