package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	agentttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// newSecretCmd: guest-components' sealed secrets (CDH's format).
func newSecretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Sealed secrets in Confidential Containers' format: keygen, seal, unseal",
		Long: `A sealed secret is "sealed.<header>.<payload>.<signature>": an ES256 JWS whose payload
names a secret the broker holds (type vault, provider kbs). Kubernetes secrets may carry it
in place of the plaintext; in the guest, CDH's UnsealSecret (coffer agent's --cdh-socket)
checks the signature with the verification key the kid names and returns the broker's
resource. See docs/kata.md.`,
	}
	cmd.AddCommand(newSecretKeygenCmd(), newSecretSealCmd(), newSecretUnsealCmd())
	return cmd
}

func newSecretKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen PRIVATE.jwk PUBLIC.jwk",
		Short: "Make a P-256 signing key pair (JWK) for sealing; store PUBLIC.jwk in the broker under the kid",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			priv, pub, err := agentttrpc.GenerateSigningKey()
			if err != nil {
				return err
			}
			defer clear(priv)
			for _, f := range []struct {
				path string
				data []byte
				mode os.FileMode
			}{{args[0], priv, 0o600}, {args[1], pub, 0o644}} {
				if err := atomicfile.Write(f.path, f.data, atomicfile.Mode(f.mode), atomicfile.NoReplace()); err != nil {
					if errors.Is(err, fs.ErrExist) {
						return fmt.Errorf("%s exists; refusing to overwrite a key: %w", f.path, ErrUsage)
					}
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (0600) and %s\n", args[0], args[1])
			return nil
		},
	}
}

func newSecretSealCmd() *cobra.Command {
	var keyFile, kid string
	cmd := &cobra.Command{
		Use:   "seal --signing-key PRIVATE.jwk --kid kbs:///REPO/TYPE/TAG kbs:///REPO/TYPE/TAG",
		Short: "Print a sealed secret (type vault, provider kbs) naming the broker resource given",
		Example: `  coffer secret keygen seal.jwk seal.pub.jwk
  coffer kbs set-resource … --path default/sealed-secret/key1 --resource-file seal.pub.jwk
  coffer secret seal --signing-key seal.jwk --kid kbs:///default/sealed-secret/key1 kbs:///default/app/password`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" || kid == "" {
				return fmt.Errorf("--signing-key and --kid are required: %w", ErrUsage)
			}
			if _, err := protocol.ParseKID(args[0]); err != nil {
				return fmt.Errorf("%w: %w", err, ErrUsage)
			}
			data, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			defer clear(data)
			key, err := agentttrpc.ParseSigningKey(data)
			if err != nil {
				return fmt.Errorf("--signing-key %s: %w: %w", keyFile, err, ErrUsage)
			}
			s, err := agentttrpc.Seal(agentttrpc.Secret{Type: "vault", Provider: "kbs", Name: args[0]}, key, kid)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "signing-key", "", "P-256 private key (JWK) to sign with")
	cmd.Flags().StringVar(&kid, "kid", "", "kbs:///REPO/TYPE/TAG where the broker holds the public key (JWK)")
	return cmd
}

func newSecretUnsealCmd() *cobra.Command {
	var kbs kbsClientFlags
	var keysDir string
	cmd := &cobra.Command{
		Use:   "unseal --kbs URL [--keys DIR] SEALED|-",
		Short: "Verify a sealed secret and print the broker's resource it names (attests first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kbs.client(cmd.Context())
			if err != nil {
				return err
			}
			if c == nil {
				return fmt.Errorf("--kbs (or COFFER_KBS_URL) is required: %w", ErrUsage)
			}
			sealed := args[0]
			if sealed == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), agentttrpc.MaxSealedSecret+2))
				if err != nil {
					return err
				}
				sealed = strings.TrimSpace(string(b))
			}
			pt, err := agentttrpc.Unsealer{Resource: c.KeyResolver(), KeysDir: keysDir}.Unseal(cmd.Context(), []byte(sealed))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(pt)
			return err
		},
	}
	kbs.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&keysDir, "keys", "", "directory of local verification keys (JWK files named by kid), besides kbs:/// kids")
	return cmd
}
