package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
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
	fs.StringVar(&f.adminKey, "admin-key", "", "broker admin private key (Ed25519 PEM; default $COFFER_KBS_ADMIN_KEY)")
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

// pinning wraps t so that DST's manifest digest is pinned in the broker,
// when --kbs is set and --pin is on (by default for a registry DST).
func (f *kbsKeyFlags) pinning(cmd *cobra.Command, t imagecrypt.Transform, dst string) (imagecrypt.Transform, error) {
	explicit := cmd.Flags().Changed("pin")
	if f.url == "" {
		return t, nil
	}
	dref, err := transport.Parse(dst)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrUsage)
	}
	if !(f.pin || (!explicit && imagepolicy.IsRegistry(dref))) {
		return t, nil
	}
	kp, err := resource.ParseKeyID(f.keyID)
	if err != nil {
		return nil, fmt.Errorf("--key-id: %w", err)
	}
	c, err := f.admin(cmd.Context())
	if err != nil {
		return nil, err
	}
	out := cmd.OutOrStdout()
	return imagepolicy.PinOnWrite(t, c, kp.Repo, dref, func(p imagepolicy.Pinned) {
		fmt.Fprintf(out, "pinned %s at %s in the broker (kbs:///%s)\n", p.Pin.Reference, p.Pin.Digest, p.Path)
	})
}

func (f *kbsKeyFlags) admin(ctx context.Context) (*adminclient.Client, error) {
	key, err := adminclient.LoadKey(f.adminKey)
	if err != nil {
		return nil, err
	}
	return adminclient.New(f.url, key, adminTrust(ctx)...)
}

// wrapper returns nil when --kbs is not set. The KEK it wraps with is
// stored in the broker only by the returned commit, after DST is written:
// a failed or killed run leaves nothing in the broker that blocks its retry.
func (f *kbsKeyFlags) wrapper(ctx context.Context) (keywrap.Wrapper, func(context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	if f.url == "" {
		if f.keyID != "" {
			return nil, noop, fmt.Errorf("--key-id needs --kbs: %w", ErrUsage)
		}
		return nil, noop, nil
	}
	f.adminKey = orEnv(f.adminKey, envKBSAdminKey)
	if f.adminKey == "" || f.keyID == "" {
		return nil, noop, fmt.Errorf("--kbs needs --admin-key (or COFFER_KBS_ADMIN_KEY) and --key-id: %w", ErrUsage)
	}
	if f.replace {
		slog.Warn("--replace-key: the broker's key at this id is replaced; images encrypted under the old key can no longer be decrypted", "key-id", f.keyID)
	}
	c, err := f.admin(ctx)
	if err != nil {
		return nil, noop, err
	}
	p, err := c.PrepareKEK(ctx, f.keyID, f.replace)
	if err != nil {
		return nil, noop, kekError(f.keyID, err)
	}
	w, err := aa.NewWrapper(p.Key, p.KID)
	if err != nil {
		p.Discard()
		return nil, noop, err
	}
	return w, func(ctx context.Context) error {
		if err := p.Commit(ctx); err != nil {
			return fmt.Errorf("the image was written, but %w; run the same command again", kekError(f.keyID, err))
		}
		slog.Info("registered the image key in the broker", "key-id", p.KID)
		return nil
	}, nil
}

func kekError(keyID string, err error) error {
	if errors.Is(err, spec.ErrExists) {
		return fmt.Errorf("the broker already holds a key at %s (images encrypted under it need it): choose another --key-id, or pass --replace-key to replace it and make those images undecryptable: %w", keyID, spec.ErrExists)
	}
	return fmt.Errorf("registering the image key in the broker (--key-id %s): %w", keyID, err)
}
