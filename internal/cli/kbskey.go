package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/protocol"
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

// RegisterKEK generates a 32-byte KEK, stores it in the broker under keyID
// and only then returns a wrapper using it. The KEK is never written to disk.
// Unless replace is set the write is create-only, so an existing key (which
// earlier images need) is never overwritten.
func RegisterKEK(ctx context.Context, url, adminKeyPath, keyID string, replace bool) (keywrap.Wrapper, error) {
	kid := "kbs:///" + strings.TrimPrefix(keyID, "/")
	if _, err := protocol.ParseKID(kid); err != nil {
		return nil, fmt.Errorf("--key-id %q: %w", keyID, err)
	}
	key, err := adminclient.LoadKey(adminKeyPath)
	if err != nil {
		return nil, err
	}
	c, err := adminclient.New(url, key)
	if err != nil {
		return nil, err
	}
	kek := make([]byte, aa.KEKSize)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	store := c.CreateResource
	if replace {
		store = c.SetResource
	}
	if err := store(ctx, strings.TrimPrefix(keyID, "/"), kek); err != nil {
		if errors.Is(err, spec.ErrExists) {
			return nil, fmt.Errorf("the broker already holds a key at %s (images encrypted under it need it): choose another --key-id, or pass --replace-key to replace it and make those images undecryptable: %w", keyID, spec.ErrExists)
		}
		return nil, fmt.Errorf("registering the image key in the broker: %w", err)
	}
	return aa.NewWrapper(kek, kid)
}
