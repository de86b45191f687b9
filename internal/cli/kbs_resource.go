package cli

// The broker's resource verbs: set-resource, delete-resource.

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

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
