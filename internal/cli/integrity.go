package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/transport"
)

// integrityFlags choose what must vouch for an image: the broker's digest
// pin (with --kbs), a containers-policy.json (--policy), or nothing
// (a warning, or an error under --require-signature).
type integrityFlags struct {
	policy, lookaside string
	require           bool
}

func (f *integrityFlags) AddFlags(fs *pflag.FlagSet) {
	f.AddPolicyFlags(fs)
	fs.BoolVar(&f.require, "require-signature", os.Getenv("COFFER_REQUIRE_SIGNATURE") == "1",
		"refuse an image no pin, signature or @sha256 digest vouches for (default $COFFER_REQUIRE_SIGNATURE=1)")
}

// AddPolicyFlags are --policy and --signature-lookaside alone (verify,
// which always requires something to vouch for the image).
func (f *integrityFlags) AddPolicyFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.policy, "policy", "", "containers-policy.json to enforce: a FILE, or kbs:///REPO/TYPE/TAG fetched from the broker after attestation")
	fs.StringVar(&f.lookaside, "signature-lookaside", "", "where signedBy (GPG simple signing) signatures are: DIR, file:// or http(s):// URL laid out as containers/image's lookaside")
}

// checker builds the image checker; c (the broker client) may be nil.
func (f *integrityFlags) checker(ctx context.Context, c *client.Client, topts []transport.Option, require bool) (*imagepolicy.Checker, error) {
	opts := []imagepolicy.Option{imagepolicy.WithLogger(slog.Default()), imagepolicy.WithTransport(topts...),
		imagepolicy.WithRequireSignature(f.require || require), imagepolicy.WithLookaside(f.lookaside)}
	var fetch resource.Getter // the broker client, once attested
	if c != nil {
		fetch = c
		opts = append(opts, imagepolicy.WithPins(fetch))
	}
	if f.policy != "" {
		p, err := imagepolicy.LoadPolicy(ctx, f.policy, fetch)
		if err != nil {
			return nil, fmt.Errorf("--policy %s: %w", f.policy, err)
		}
		opts = append(opts, imagepolicy.WithPolicy(p))
	}
	return imagepolicy.New(opts...)
}
