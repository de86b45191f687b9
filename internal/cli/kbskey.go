package cli

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/pkg/coffer"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// kbsKeyFlags let encrypt register a fresh key-encryption key in a broker
// and wrap the layers for the attestation-agent scheme with it.
type kbsKeyFlags struct {
	url, adminKey, keyID string
	replace              bool
	pin                  bool
	pinSet               bool // --pin given explicitly (true or false)
}

func (f *kbsKeyFlags) AddFlags(fs *pflag.FlagSet) {
	addBrokerURLFlag(fs, &f.url, "key broker URL: generate a KEK, register it there under --key-id, wrap layers for attestation-agent")
	fs.StringVar(&f.adminKey, "admin-key", "", "broker admin private key: Ed25519 PEM, or a pkcs11: URI or pkcs11 key file for a key in a PKCS#11 token (default $COFFER_KBS_ADMIN_KEY)")
	fs.StringVar(&f.keyID, "key-id", "", "broker resource path REPO/TYPE/TAG for the KEK, e.g. default/image_key/app")
	fs.BoolVar(&f.replace, "replace-key", false, "replace an existing KEK at --key-id: every image already encrypted under it becomes undecryptable")
	fs.BoolVar(&f.pin, "pin", false, "record DST's manifest digest in the broker (REPO/image_pin/<sha256 of the name>), enforced by coffer pull --kbs (default: on when DST is docker://; --pin=false to skip)")
}

// checkPin refuses --pin without --kbs, before anything is registered.
func (f *kbsKeyFlags) checkPin() error {
	if f.pin && f.url == "" {
		return fmt.Errorf("--pin needs --kbs (the broker holds the pin): %w", ErrUsage)
	}
	return nil
}

func (f *kbsKeyFlags) admin(cmd *cobra.Command) (*adminclient.Client, error) {
	key, err := loadAdminKey(cmd.Flags(), f.adminKey)
	if err != nil {
		return nil, err
	}
	return adminclient.New(f.url, key, adminTrust(cmd.Context())...)
}

// options are the pkg/coffer options of the flags, after their usage
// checks; none without --kbs. coffer.Encrypt prepares the KEK before DST is
// written and stores it in the broker only after: a failed or killed run
// leaves nothing in the broker that blocks its retry. The pin is on by
// default for a registry DST (the library's default) unless --pin is given.
func (f *kbsKeyFlags) options(cmd *cobra.Command) ([]coffer.Option, error) {
	if f.url == "" {
		if f.keyID != "" {
			return nil, fmt.Errorf("--key-id needs --kbs: %w", ErrUsage)
		}
		return nil, nil
	}
	f.adminKey = orEnv(f.adminKey, envKBSAdminKey)
	if f.adminKey == "" || f.keyID == "" {
		return nil, fmt.Errorf("--kbs needs --admin-key (or COFFER_KBS_ADMIN_KEY) and --key-id: %w", ErrUsage)
	}
	kp, err := resource.ParseKeyID(f.keyID) // the one parse of the key id on the encrypt path
	if err != nil {
		return nil, kekError(f.keyID, err)
	}
	if f.replace {
		slog.Warn("--replace-key: the broker's key at this id is replaced; images encrypted under the old key can no longer be decrypted", "key-id", f.keyID)
	}
	c, err := f.admin(cmd)
	if err != nil {
		return nil, err
	}
	out := cmd.OutOrStdout()
	opts := []coffer.Option{coffer.WithKBS(f.url), coffer.WithAdmin(c), coffer.WithKeyPath(kp), coffer.WithReplaceKey(f.replace),
		coffer.WithPinned(func(p imagepolicy.Pinned) {
			fmt.Fprintf(out, "pinned %s at %s in the broker (kbs:///%s)\n", p.Pin.Reference, p.Pin.Digest, p.Path)
		})}
	if cmd.Flags().Changed("pin") {
		opts = append(opts, coffer.WithPin(f.pin))
	}
	return opts, nil
}

// explain words a coffer.Encrypt failure at the broker's key for the CLI.
func (f *kbsKeyFlags) explain(err error) error {
	var ke *coffer.KEKError
	if !errors.As(err, &ke) {
		return err
	}
	if ke.Committed {
		return fmt.Errorf("the image was written, but %w; run the same command again", kekError(f.keyID, ke.Err))
	}
	return kekError(f.keyID, ke.Err)
}

func kekError(keyID string, err error) error {
	if errors.Is(err, spec.ErrExists) {
		return fmt.Errorf("the broker already holds a key at %s (images encrypted under it need it): choose another --key-id, or pass --replace-key to replace it and make those images undecryptable: %w", keyID, spec.ErrExists)
	}
	return fmt.Errorf("registering the image key in the broker (--key-id %s): %w", keyID, err)
}
