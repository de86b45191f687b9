package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/pkg/coffer"
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

// options are the pkg/coffer options of the flags.
func (f *integrityFlags) options() []coffer.Option {
	return []coffer.Option{coffer.WithLogger(slog.Default()), coffer.WithSignatureLookaside(f.lookaside),
		coffer.WithPolicy(f.policy), coffer.WithRequireSignature(f.require)}
}

// explain words a policy that failed to load as the flag that named it.
func explainPolicy(err error) error {
	var pe *coffer.PolicyError
	if errors.As(err, &pe) {
		return fmt.Errorf("--policy %s: %w", pe.Src, pe.Err)
	}
	return err
}

// checker builds the image checker (coffer.Checker); c (the broker
// client) may be nil.
func (f *integrityFlags) checker(ctx context.Context, c *client.Client, topts []transport.Option, require bool) (*imagepolicy.Checker, error) {
	chk, err := coffer.Checker(ctx, c, require, append(f.options(), coffer.WithTransport(topts...))...)
	return chk, explainPolicy(err)
}
