package cli

import (
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// newKBSClientCmds are the guest-side verbs of `coffer kbs`.
func newKBSClientCmds() []*cobra.Command {
	var tee, teeKey, path, tpmAddr, output string
	clientFor := func(cmd *cobra.Command) (*kbsClientFlags, error) {
		f := &kbsClientFlags{url: brokerURL(cmd.Flags()), tee: tee, teeKey: teeKey, tpm: tpmAddr}
		if f.url == "" {
			return nil, fmt.Errorf("--url (or COFFER_KBS_URL) is required: %w", ErrUsage)
		}
		return f, nil
	}
	attest := &cobra.Command{
		Use:   "attest --url URL [--tee TEE]",
		Short: "Attest to the broker and print the EAR token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := clientFor(cmd)
			if err != nil {
				return err
			}
			c, err := f.client(cmd.Context())
			if err != nil {
				return err
			}
			tok, err := c.Attest(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	get := &cobra.Command{
		Use:   "get-resource --url URL --path REPO/TYPE/TAG [--tee TEE]",
		Short: "Attest and fetch a resource; its bytes go to stdout (raw, or base64 as kbs-client prints them)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "raw" && output != "base64" {
				return fmt.Errorf("--output %q: want raw or base64: %w", output, ErrUsage)
			}
			p, err := protocol.ParseResourcePath(path)
			if err != nil {
				return fmt.Errorf("--path %q: %w: %w", path, err, ErrUsage)
			}
			f, err := clientFor(cmd)
			if err != nil {
				return err
			}
			c, err := f.client(cmd.Context())
			if err != nil {
				return err
			}
			data, err := c.Get(cmd.Context(), p)
			if err != nil {
				return err
			}
			if output == "base64" {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(data))
				return err
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	for _, c := range []*cobra.Command{attest, get} {
		addTEEFlags(c.Flags(), &tee, &teeKey, &tpmAddr)
	}
	get.Flags().StringVar(&path, "path", "", "resource path repo/type/tag")
	get.Flags().StringVar(&output, "output", "raw", "raw: the resource's bytes; base64: standard base64 and a newline, as trustee's kbs-client get-resource prints")
	return []*cobra.Command{attest, get}
}
