package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/spec"
)

// kbsKeyFlags let encrypt register a fresh key-encryption key in a broker
// and wrap the layers for the attestation-agent scheme with it.
type kbsKeyFlags struct {
	url, adminKey, keyID string
	replace              bool
}

func (f *kbsKeyFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "kbs", "", "key broker URL: generate a KEK, register it there under --key-id, wrap layers for attestation-agent")
	fs.StringVar(&f.adminKey, "admin-key", "", "broker admin private key (Ed25519 PEM; default $COFFER_KBS_ADMIN_KEY)")
	fs.StringVar(&f.keyID, "key-id", "", "broker resource path REPO/TYPE/TAG for the KEK, e.g. default/image_key/app")
	fs.BoolVar(&f.replace, "replace-key", false, "replace an existing KEK at --key-id: every image already encrypted under it becomes undecryptable")
}

// wrapper returns nil when --kbs is not set.
func (f *kbsKeyFlags) wrapper(ctx context.Context) (keywrap.Wrapper, error) {
	if f.url == "" {
		if f.keyID != "" {
			return nil, fmt.Errorf("--key-id needs --kbs: %w", ErrUsage)
		}
		return nil, nil
	}
	if f.adminKey == "" {
		f.adminKey = os.Getenv("COFFER_KBS_ADMIN_KEY")
	}
	if f.adminKey == "" || f.keyID == "" {
		return nil, fmt.Errorf("--kbs needs --admin-key (or COFFER_KBS_ADMIN_KEY) and --key-id: %w", ErrUsage)
	}
	if f.replace {
		slog.Warn("--replace-key: the broker's key at this id is replaced; images encrypted under the old key can no longer be decrypted", "key-id", f.keyID)
	}
	return RegisterKEK(ctx, f.url, f.adminKey, f.keyID, f.replace)
}

// RegisterKEK registers a fresh KEK in the broker under keyID
// (adminclient.RegisterKEK: create-only unless replace) and returns the
// attestation-agent wrapper using it. The KEK is never written to disk.
func RegisterKEK(ctx context.Context, url, adminKeyPath, keyID string, replace bool) (keywrap.Wrapper, error) {
	key, err := adminclient.LoadKey(adminKeyPath)
	if err != nil {
		return nil, err
	}
	c, err := adminclient.New(url, key)
	if err != nil {
		return nil, err
	}
	kek, kid, err := c.RegisterKEK(ctx, keyID, replace)
	switch {
	case errors.Is(err, spec.ErrExists):
		return nil, fmt.Errorf("the broker already holds a key at %s (images encrypted under it need it): choose another --key-id, or pass --replace-key to replace it and make those images undecryptable: %w", keyID, spec.ErrExists)
	case err != nil:
		return nil, fmt.Errorf("registering the image key in the broker (--key-id %s): %w", keyID, err)
	}
	defer clear(kek)
	return aa.NewWrapper(kek, kid)
}
