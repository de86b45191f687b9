// Package coffer is the small public layer over coffer's libraries, as
// go-containerregistry's pkg/crane is over its own: Encrypt, Decrypt, Pull
// and Verify take image references as strings (oci:DIR[:TAG],
// docker://REF, oci-archive:FILE[:TAG], docker-archive:FILE) and
// functional options that mirror the CLI's flags. It holds the wiring a
// library user needs and `coffer` itself uses: registering a fresh
// key-encryption key in the broker (prepared before the image is written,
// committed after), the digest-pin default (on for a registry
// destination), the broker replica list ("URL,URL,…") and the per-call
// key cache. It reads no files and no environment: the caller hands it
// keys and values.
package coffer

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/transport"
)

// Option configures Encrypt, Decrypt, Pull and Verify; each uses the
// options that apply to it and ignores the others.
type Option func(*options) error

type options struct {
	recipients []keywrap.Wrapper
	keys       []keywrap.Unwrapper
	kbs        []string // broker replicas, tried in turn
	client     *client.Client
	admin      *adminclient.Client
	adminKey   ed25519.PrivateKey
	keyID      *resource.Path
	replaceKey bool
	pin        *bool
	onPin      func(imagepolicy.Pinned)
	attester   evidence.Attester
	teeKeyType string
	hc         *http.Client
	clientOpts []client.Option
	transport  []transport.Option
	image      []imagecrypt.Option
	pull       []pull.Option
	policy     string
	lookaside  string
	requireSig bool
	platform   *v1.Platform
	logger     *slog.Logger
}

func newOptions(opts []Option) (*options, error) {
	o := &options{logger: slog.Default()}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithRecipients adds the wrappers layer keys are wrapped for (--recipient).
func WithRecipients(w ...keywrap.Wrapper) Option {
	return func(o *options) error { o.recipients = append(o.recipients, w...); return nil }
}

// WithKeys adds local private keys, tried before the broker (--key).
func WithKeys(u ...keywrap.Unwrapper) Option {
	return func(o *options) error { o.keys = append(o.keys, u...); return nil }
}

// WithKBS names the key broker (--kbs): "URL", or "URL,URL,…" for replicas
// of one broker tried in turn when one fails (SplitURLs).
func WithKBS(urls string) Option {
	return func(o *options) error { o.kbs = SplitURLs(urls); return nil }
}

// WithClient is an attesting broker client made by the caller (with its
// own trust, init-data, attester), instead of WithKBS and its options.
func WithClient(c *client.Client) Option {
	return func(o *options) error { o.client = c; return nil }
}

// SplitURLs splits a broker replica list "URL,URL,…" (spaces around the
// commas allowed); "" is none.
func SplitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// WithAdminKey is the broker admin key Encrypt registers the image's KEK
// (and its digest pin) with (--admin-key).
func WithAdminKey(key ed25519.PrivateKey) Option {
	return func(o *options) error { o.adminKey = key; return nil }
}

// WithAdmin is an admin client made by the caller (e.g. one holding a
// pre-issued token, adminclient.NewWithToken), instead of WithAdminKey.
func WithAdmin(c *adminclient.Client) Option {
	return func(o *options) error { o.admin = c; return nil }
}

// WithKeyID is where Encrypt registers the KEK: "repo/type/tag",
// "/repo/type/tag" or "kbs:///repo/type/tag" (--key-id). It is parsed here,
// once.
func WithKeyID(id string) Option {
	return func(o *options) error {
		p, err := resource.ParseKeyID(id)
		if err != nil {
			return fmt.Errorf("key id: %w", err)
		}
		o.keyID = &p
		return nil
	}
}

// WithKeyPath is WithKeyID for a key id the caller parsed (resource.ParseKeyID).
func WithKeyPath(p resource.Path) Option {
	return func(o *options) error {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("key id: %w", err)
		}
		o.keyID = &p
		return nil
	}
}

// WithReplaceKey lets Encrypt replace a KEK already at the key id: every
// image encrypted under it becomes undecryptable (--replace-key).
func WithReplaceKey(yes bool) Option {
	return func(o *options) error { o.replaceKey = yes; return nil }
}

// WithPin sets whether Encrypt records the destination's manifest digest
// in the broker (--pin). Default: on when a broker is given and the
// destination is a registry (docker://); on without a broker is an error.
func WithPin(yes bool) Option {
	return func(o *options) error { o.pin = &yes; return nil }
}

// WithPinned is called with the pin Encrypt recorded.
func WithPinned(f func(imagepolicy.Pinned)) Option {
	return func(o *options) error { o.onPin = f; return nil }
}

// WithAttester is the TEE evidence the broker client attests with (--tee).
// Default: evidence.Detect's.
func WithAttester(a evidence.Attester) Option {
	return func(o *options) error { o.attester = a; return nil }
}

// WithTeeKeyType is the broker client's tee key: "ec" (default), "rsa" or
// "mlkem768" (--tee-key).
func WithTeeKeyType(t string) Option {
	return func(o *options) error { o.teeKeyType = t; return nil }
}

// WithHTTPClient is the HTTP client for the broker (TLS trust: --cacert).
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error { o.hc = hc; return nil }
}

// WithClientOptions passes further options to the broker client.
func WithClientOptions(opts ...client.Option) Option {
	return func(o *options) error { o.clientOpts = append(o.clientOpts, opts...); return nil }
}

// WithTransport passes registry options (--creds, --insecure, --jobs).
func WithTransport(opts ...transport.Option) Option {
	return func(o *options) error { o.transport = append(o.transport, opts...); return nil }
}

// WithImageOptions passes options to imagecrypt (--layer, --platform,
// progress) for Encrypt and Decrypt.
func WithImageOptions(opts ...imagecrypt.Option) Option {
	return func(o *options) error { o.image = append(o.image, opts...); return nil }
}

// WithPullOptions passes options to pull.Pull (--platform, unpack bounds, progress).
func WithPullOptions(opts ...pull.Option) Option {
	return func(o *options) error { o.pull = append(o.pull, opts...); return nil }
}

// WithPolicy is the containers-policy.json Pull and Verify enforce: a file
// or kbs:///REPO/TYPE/TAG fetched from the broker after attestation
// (--policy).
func WithPolicy(src string) Option {
	return func(o *options) error { o.policy = src; return nil }
}

// WithSignatureLookaside is where signedBy signatures are (--signature-lookaside).
func WithSignatureLookaside(base string) Option {
	return func(o *options) error { o.lookaside = base; return nil }
}

// WithRequireSignature makes Pull refuse an image nothing vouches for
// (--require-signature); Verify always does.
func WithRequireSignature(yes bool) Option {
	return func(o *options) error { o.requireSig = yes; return nil }
}

// WithPlatform picks the image of an index Pull and Verify use
// (--platform). Default: linux/GOARCH.
func WithPlatform(p v1.Platform) Option {
	return func(o *options) error { o.platform = &p; return nil }
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// ErrNoBroker is returned by BrokerClient when no broker is given.
var ErrNoBroker = errors.New("no key broker given")

// BrokerClient returns the attesting broker client the options name
// (WithClient, or WithKBS with WithAttester, WithTeeKeyType,
// WithHTTPClient, WithClientOptions); ErrNoBroker without either.
func BrokerClient(opts ...Option) (*client.Client, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	return o.brokerClient()
}

func (o *options) brokerClient() (*client.Client, error) {
	if o.client != nil {
		return o.client, nil
	}
	if len(o.kbs) == 0 {
		return nil, ErrNoBroker
	}
	att := o.attester
	if att == nil {
		a, err := evidence.Detect()
		if err != nil {
			return nil, err
		}
		att = a
	}
	copts := []client.Option{client.WithAttester(att), client.WithAlternateURLs(o.kbs[1:]...), client.WithLogger(o.logger)}
	if o.teeKeyType != "" {
		copts = append(copts, client.WithTeeKeyType(o.teeKeyType))
	}
	if o.hc != nil {
		copts = append(copts, client.WithHTTPClient(o.hc))
	}
	return client.New(o.kbs[0], append(copts, o.clientOpts...)...)
}

// hasBroker reports whether a broker is given (WithKBS or WithClient).
func (o *options) hasBroker() bool { return o.client != nil || len(o.kbs) > 0 }

// adminClient is WithAdmin's client, or one over the first broker URL
// signing with WithAdminKey.
func (o *options) adminClient() (*adminclient.Client, error) {
	if o.admin != nil {
		return o.admin, nil
	}
	if len(o.adminKey) == 0 {
		return nil, errors.New("registering a key in the broker needs an admin key (WithAdminKey) or client (WithAdmin)")
	}
	var aopts []adminclient.Option
	if o.hc != nil {
		aopts = append(aopts, adminclient.WithHTTPClient(o.hc))
	}
	return adminclient.New(o.kbs[0], o.adminKey, aopts...)
}
