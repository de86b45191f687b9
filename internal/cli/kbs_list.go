package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

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
