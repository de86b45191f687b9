package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/agent/sealed"
	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// newSecretCmd: guest-components' sealed secrets (CDH's format).
func newSecretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Sealed secrets in Confidential Containers' format: keygen, seal, unseal",
		Long: `A sealed secret is "sealed.<header>.<payload>.<signature>": an ES256 JWS whose payload
names a secret the broker holds (type vault, provider kbs), or carries the secret encrypted
under a key the broker holds (type envelope, provider kbs: A256GCM data, A256KW-wrapped key). Kubernetes secrets may carry it
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
			priv, pub, err := sealed.GenerateSigningKey()
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
	var keyFile, kid, typ, provider, keyID, kekFile string
	cmd := &cobra.Command{
		Use:   "seal --signing-key PRIVATE.jwk --kid kbs:///REPO/TYPE/TAG (kbs:///REPO/TYPE/TAG | --type envelope --key-id kbs:///… --kek FILE SECRET-FILE|-)",
		Short: "Print a sealed secret: type vault names a broker resource; type envelope carries the secret encrypted under a broker-held key",
		Example: `  coffer secret keygen seal.jwk seal.pub.jwk
  coffer kbs set-resource … --path default/sealed-secret/key1 --resource-file seal.pub.jwk
  coffer secret seal --signing-key seal.jwk --kid kbs:///default/sealed-secret/key1 kbs:///default/app/password
  # envelope: the secret travels in the sealed secret; the broker holds only the 32-byte key
  head -c 32 /dev/urandom > kek.bin && coffer kbs set-resource … --path default/kek/app --resource-file kek.bin
  coffer secret seal --signing-key seal.jwk --kid kbs:///default/sealed-secret/key1 \
    --type envelope --key-id kbs:///default/kek/app --kek kek.bin password.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" || kid == "" {
				return fmt.Errorf("--signing-key and --kid are required: %w", ErrUsage)
			}
			data, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			defer clear(data)
			key, err := sealed.ParseSigningKey(data)
			if err != nil {
				return fmt.Errorf("--signing-key %s: %w: %w", keyFile, err, ErrUsage)
			}
			var sec sealed.Secret
			switch typ {
			case "vault":
				if keyID != "" || kekFile != "" {
					return fmt.Errorf("--key-id and --kek are for --type envelope: %w", ErrUsage)
				}
				if _, err := protocol.ParseKID(args[0]); err != nil {
					return fmt.Errorf("%w: %w", err, ErrUsage)
				}
				sec = sealed.Secret{Type: "vault", Provider: provider, Name: args[0]}
			case "envelope":
				if keyID == "" || kekFile == "" {
					return fmt.Errorf("--type envelope needs --key-id (where the broker holds the key) and --kek (that key, 32 bytes): %w", ErrUsage)
				}
				kek, err := os.ReadFile(kekFile)
				if err != nil {
					return err
				}
				defer clear(kek)
				pt, err := readSecretInput(cmd, args[0])
				if err != nil {
					return err
				}
				defer clear(pt)
				if sec, err = sealed.SealEnvelope(pt, provider, keyID, kek); err != nil {
					return fmt.Errorf("%w: %w", err, ErrUsage)
				}
			default:
				return fmt.Errorf("--type %q: want vault or envelope: %w", typ, ErrUsage)
			}
			s, err := sealed.Seal(sec, key, kid)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "signing-key", "", "P-256 private key (JWK) to sign with")
	cmd.Flags().StringVar(&kid, "kid", "", "kbs:///REPO/TYPE/TAG where the broker holds the public key (JWK)")
	cmd.Flags().StringVar(&typ, "type", "vault", "vault (the secret stays in the broker) or envelope (the secret is in the sealed secret, encrypted)")
	cmd.Flags().StringVar(&provider, "provider", "kbs", "provider of the secret or of the envelope key")
	cmd.Flags().StringVar(&keyID, "key-id", "", "envelope: kbs:///REPO/TYPE/TAG of the 32-byte key that wraps the secret's key")
	cmd.Flags().StringVar(&kekFile, "kek", "", "envelope: file holding that 32-byte key (the same bytes the broker holds)")
	return cmd
}

// readSecretInput reads a secret from a file or stdin ("-"), bounded.
func readSecretInput(cmd *cobra.Command, name string) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, sealed.MaxSealedSecret/2+1))
	if err != nil {
		return nil, err
	}
	if len(b) > sealed.MaxSealedSecret/2 {
		return nil, fmt.Errorf("the secret is over %d bytes; keep large secrets in the broker (--type vault): %w", sealed.MaxSealedSecret/2, ErrUsage)
	}
	return b, nil
}

func newSecretUnsealCmd() *cobra.Command {
	var kbs kbsClientFlags
	var keysDir string
	cmd := &cobra.Command{
		Use:   "unseal --kbs URL [--keys DIR] SEALED|-",
		Short: "Verify a sealed secret and print its plaintext (attests to the broker first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kbs.client(cmd.Context())
			if err != nil {
				return err
			}
			if c == nil {
				return fmt.Errorf("--kbs (or COFFER_KBS_URL) is required: %w", ErrUsage)
			}
			ss := args[0]
			if ss == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), sealed.MaxSealedSecret+2))
				if err != nil {
					return err
				}
				ss = strings.TrimSpace(string(b))
			}
			pt, err := sealed.Unsealer{Resource: c.KeyResolver(), KeysDir: keysDir}.Unseal(cmd.Context(), []byte(ss))
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
