package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/transport"
)

func newEncryptCmd() *cobra.Command {
	var (
		reg  registryFlags
		sel  selectFlags
		keys keyFlags
		kbs  kbsKeyFlags

		trustSrc bool
	)
	cmd := &cobra.Command{
		Use:   "encrypt [flags] SRC DST",
		Short: "Encrypt image layers for recipients (ocicrypt format)",
		Long: `Encrypt the layers of SRC for the given recipients and write DST.
Layers already encrypted get the new recipients added (pass --key to open them);
their blobs stay unchanged. SRC and DST: oci:DIR[:TAG], docker://REF,
oci-archive:FILE[:TAG], docker-archive:FILE (read only).`,
		Example: `  coffer encrypt --recipient jwe:pub.pem oci:app:v1 oci:app:enc
  coffer encrypt --recipient jwe:new.pem --key old.pem oci:app:enc oci:app:enc2
  coffer encrypt --kbs http://127.0.0.1:8080 --admin-key admin.key --key-id default/image_key/app --pin SRC DST`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := parseRefs(args...); err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := kbs.checkPin(); err != nil {
				return err
			}
			wrappers, err := keys.wrappers(ctx)
			if err != nil {
				return err
			}
			kopts, err := kbs.options(cmd)
			if err != nil {
				return err
			}
			if len(wrappers) == 0 && kopts == nil {
				return fmt.Errorf("no recipients: give --recipient or --kbs with --key-id: %w", ErrUsage)
			}
			opts, err := sel.options()
			if err != nil {
				return err
			}
			unw, err := keys.unwrappers(ctx)
			if err != nil {
				return err
			}
			opts = append(opts, imagecrypt.WithTrustedSource(trustSrc))
			return imageRun(cmd, args[0], args[1], &reg, opts, true, func(_, _ transport.Reference, topts []transport.Option, iopts []imagecrypt.Option) (int, error) {
				res, err := coffer.Encrypt(ctx, args[0], args[1], append(kopts, coffer.WithRecipients(wrappers...), coffer.WithKeys(unw...),
					coffer.WithTransport(topts...), coffer.WithImageOptions(iopts...))...)
				if err != nil {
					return 0, kbs.explain(err)
				}
				return res.Layers, nil
			})
		},
	}
	reg.AddFlags(cmd.Flags())
	reg.AddTransferFlags(cmd.Flags())
	sel.AddFlags(cmd.Flags())
	keys.addRecipients(cmd.Flags())
	keys.addKeys(cmd.Flags(), "private key opening already-encrypted layers, to add recipients to them (repeatable)")
	kbs.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&trustSrc, "no-verify-source", false, "do not re-hash source layers against their digests (saves one SHA-256 pass; registry sources are verified while downloading anyway)")
	return cmd
}

func newRekeyCmd() *cobra.Command {
	var (
		reg  registryFlags
		sel  selectFlags
		keys keyFlags
	)
	cmd := &cobra.Command{
		Use:   "rekey --key OLD --recipient NEW... SRC DST",
		Short: "Replace the recipient set of encrypted layers (key rotation); blobs unchanged",
		Long: `Open each encrypted layer's key with --key and wrap it again for exactly the
--recipient set given: earlier recipients lose access to the image written to
DST, the layer blobs stay byte for byte the same (only the manifest changes).
Rekey rewrites the manifest, so its digest changes: an image pinned in a
broker must be re-pinned (coffer kbs pin DST) or attested pulls refuse it.`,
		Example: `  coffer rekey --key alice.pem --recipient jwe:new.pub.pem oci:app:enc oci:app:rotated
  coffer rekey --key alice.pem --recipient jwe:new.pub.pem docker://reg/app:enc docker://reg/app:enc`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := parseRefs(args...); err != nil {
				return err
			}
			ctx := cmd.Context()
			wrappers, err := keys.wrappers(ctx)
			if err != nil {
				return err
			}
			unw, err := keys.unwrappers(ctx)
			if err != nil {
				return err
			}
			if len(wrappers) == 0 || len(unw) == 0 {
				return fmt.Errorf("rekey needs --key (a current private key) and at least one --recipient: %w", ErrUsage)
			}
			opts, err := sel.options()
			if err != nil {
				return err
			}
			opts = append(opts, imagecrypt.WithKeys(unw...))
			if err := imageJob(cmd, args[0], args[1], &reg, opts, imagecrypt.RekeyFor(wrappers...), true); err != nil {
				return err
			}
			// The manifest changed: a digest pin of DST no longer matches it.
			fmt.Fprintf(cmd.ErrOrStderr(), "rekey: %s has a new manifest digest: if a broker pins it, re-pin it (coffer kbs pin --url URL --admin-key KEY %s) or attested pulls refuse it\n", args[1], args[1])
			return nil
		},
	}
	reg.AddFlags(cmd.Flags())
	reg.AddTransferFlags(cmd.Flags())
	sel.AddFlags(cmd.Flags())
	keys.addRecipients(cmd.Flags())
	keys.addKeys(cmd.Flags(), "current private key FILE[:pass=P|:file=F|:fd=N] or provider:NAME (repeatable)")
	return cmd
}
