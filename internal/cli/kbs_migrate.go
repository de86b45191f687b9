package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/store/postgres"
)

// newKBSMigrateCmd is `coffer kbs migrate --store postgres://…`: create or
// upgrade the broker's database schema (idempotent, versioned).
func newKBSMigrateCmd() *cobra.Command {
	var storeURL, urlFile string
	cmd := &cobra.Command{
		Use:   "migrate --store postgres://user@host/db",
		Short: "Create or upgrade the PostgreSQL schema of a shared broker store (safe to repeat)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if urlFile != "" {
				raw, err := os.ReadFile(urlFile)
				if err != nil {
					return fmt.Errorf("reading store URL: %w", err)
				}
				storeURL = strings.TrimSpace(string(raw))
			}
			if !postgres.IsURL(storeURL) {
				return fmt.Errorf("--store postgres://… (or --store-url-file) is required: %w", ErrUsage)
			}
			r, err := postgres.Migrate(cmd.Context(), storeURL)
			if err != nil {
				return err
			}
			if r.From == r.To {
				cmd.Printf("schema already at version %d: nothing to do\n", r.To)
			} else {
				cmd.Printf("schema migrated from version %d to %d\n", r.From, r.To)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&storeURL, "store", "", "postgres:// URL of the broker database")
	cmd.Flags().StringVar(&urlFile, "store-url-file", "", "file holding the postgres:// URL, instead of --store")
	return cmd
}

// newKBSListResourcesCmd is `coffer kbs list-resources`: what the broker
// holds (paths, sizes, times), never values.
func newKBSListResourcesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list-resources --url URL --admin-key KEY [--json]",
		Short: "List the broker's resources: paths, sizes and modification times (never values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kbsAdmin(cmd)
			if err != nil {
				return err
			}
			list, err := c.ListResources(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tSIZE\tMODIFIED")
			for _, r := range list {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Path, r.Size, r.Modified.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
