package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/transport"
)

func newInspectCmd() *cobra.Command {
	var (
		reg    registryFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "inspect [--json] IMAGE",
		Short: "Show each layer's digest, size, media type, encryption and recipients",
		Long: `Read IMAGE's manifest (every platform of an index) and print, per layer, its
digest, size and media type, whether it is encrypted, and who can open it:
jwe/pkcs7 recipients' key fingerprints, pgp key ids, keyprovider names and
broker key ids (kbs:///…). Nothing is decrypted and no key is needed.`,
		Example: `  coffer inspect oci:app:enc
  coffer inspect --json docker://registry.example/app:enc`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := transport.Parse(args[0])
			if err != nil {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			a, closeSrc, err := transport.Read(ctx, ref, reg.options(cmd.Context())...)
			if err != nil {
				return err
			}
			defer closeSrc()
			rep, err := imagecrypt.Inspect(ctx, imagecrypt.Artifact(a), recipients.Describe)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(cmd.OutOrStdout(), ref.String(), rep)
			return nil
		},
	}
	reg.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printReport(w io.Writer, name string, rep *imagecrypt.Report) {
	fmt.Fprintf(w, "%s\n", name)
	for _, m := range rep.Manifests {
		plat := ""
		if m.Platform != nil {
			plat = " platform " + m.Platform.String()
		}
		fmt.Fprintf(w, "manifest %s%s\n", m.Digest, plat)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\tDIGEST\tSIZE\tMEDIA TYPE\tENCRYPTION")
		for _, l := range m.Layers {
			enc := "-"
			if l.Encrypted {
				var s []string
				for _, sc := range l.Schemes {
					s = append(s, fmt.Sprintf("%s(%d)", sc.Scheme, sc.Entries))
				}
				enc = strings.Join(s, " ")
			}
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%s\n", l.Index, shortDigest(l.Digest), l.Size, l.MediaType, enc)
		}
		tw.Flush()
		for _, l := range m.Layers {
			for _, sc := range l.Schemes {
				for _, r := range sc.Recipients {
					fmt.Fprintf(w, "    layer %d %s: %s\n", l.Index, sc.Scheme, r)
				}
				if sc.Error != "" {
					fmt.Fprintf(w, "    layer %d %s: (unreadable: %s)\n", l.Index, sc.Scheme, sc.Error)
				}
			}
		}
	}
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19] + "…"
	}
	return d
}
