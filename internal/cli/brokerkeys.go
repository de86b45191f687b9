package cli

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
)

// The broker's own keys (--admin-key, --token-key) may live in a PKCS#11
// token: a pkcs11: URI given directly, or a pkcs11 key file (ocicrypt's
// YAML), signs on the token (keywrap/pkcs11.Signer).

const pkcs11DirUsage = "directory whose PKCS#11 modules a pkcs11: key may load, besides OCICRYPT_CONFIG's pkcs11: allowed-module-paths (repeatable)"

// addPKCS11DirFlag adds --pkcs11-module-dir unless the verb has it.
func addPKCS11DirFlag(fs *pflag.FlagSet) {
	if fs.Lookup("pkcs11-module-dir") == nil {
		fs.StringArray("pkcs11-module-dir", nil, pkcs11DirUsage)
	}
}

// pkcs11Config is ocicrypt's pkcs11 config (OCICRYPT_CONFIG, …) plus the
// verb's --pkcs11-module-dir directories.
func pkcs11Config(fs *pflag.FlagSet) (pkcs11.Config, error) {
	c, err := pkcs11.LoadConfig(os.Getenv)
	if err != nil {
		return c, fmt.Errorf("pkcs11 config: %w", err)
	}
	dirs, _ := fs.GetStringArray("pkcs11-module-dir")
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return c, fmt.Errorf("--pkcs11-module-dir %q is not an absolute path: %w", d, ErrUsage)
		}
		c.AllowDir(d)
	}
	return c, nil
}

// loadAdminKey opens --admin-key: an Ed25519 PKCS#8 PEM file, or an
// Ed25519 key in a PKCS#11 token (a pkcs11: URI or a pkcs11 key file).
func loadAdminKey(fs *pflag.FlagSet, ref string) (crypto.Signer, error) {
	k, data, err := pkcs11.LoadKey(ref, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("reading admin key: %w", err)
	}
	if k == nil {
		return token.ParseAdminPrivateKey(data)
	}
	cfg, err := pkcs11Config(fs)
	if err != nil {
		return nil, err
	}
	s, err := pkcs11.NewSigner(cfg, k)
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	return s, nil
}

// newKBSAdminPublicKeyCmd prints the public half of --admin-key as PKIX
// PEM, the file kbs serve --admin-public-key takes: for a key that never
// leaves its token, the only way to get it.
func newKBSAdminPublicKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin-public-key --admin-key KEY",
		Short: "Print the admin key's public key (PKIX PEM, for kbs serve --admin-public-key); KEY may be a pkcs11: URI",
		Example: `  coffer kbs admin-public-key --admin-key 'pkcs11:token=kbs;object=admin?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/secrets/pin' > admin.pub
  coffer kbs admin-public-key --admin-key admin-hsm.yaml --pkcs11-module-dir /usr/lib/softhsm > admin.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref := kbsFlag(cmd, "admin-key", envKBSAdminKey)
			if ref == "" {
				return fmt.Errorf("--admin-key (or COFFER_KBS_ADMIN_KEY) is required: %w", ErrUsage)
			}
			key, err := loadAdminKey(cmd.Flags(), ref)
			if err != nil {
				return err
			}
			der, err := x509.MarshalPKIXPublicKey(key.Public())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
			return err
		},
	}
	addPKCS11DirFlag(cmd.Flags())
	return cmd
}
