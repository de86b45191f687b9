package coffer

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/transport"
)

// ErrNoRecipients: Encrypt was given neither WithRecipients nor a broker
// with WithKeyID.
var ErrNoRecipients = errors.New("no recipients: give recipients, or a broker (WithKBS) with a key id (WithKeyID)")

// KEKError is an Encrypt failure at the broker's key: Committed false when
// preparing it failed (nothing was written), true when the image was
// written but the key could not be stored (run the same Encrypt again).
type KEKError struct {
	KeyID     resource.Path
	Committed bool // the image is written; storing its key failed
	Err       error
}

func (e *KEKError) Error() string {
	if e.Committed {
		return fmt.Sprintf("the image was written, but storing its key at kbs:///%s failed: %v", e.KeyID, e.Err)
	}
	return fmt.Sprintf("preparing the image key at kbs:///%s: %v", e.KeyID, e.Err)
}

func (e *KEKError) Unwrap() error { return e.Err }

// EncryptResult says what Encrypt did.
type EncryptResult struct {
	Layers int    // layers encrypted (or given new recipients)
	KID    string // the broker key id the layers are wrapped for ("" without a broker)
}

// Encrypt encrypts the layers of src for the recipients and writes dst.
// With WithKBS and WithKeyID it also generates a fresh KEK, wraps the
// layers for the attestation-agent scheme with it, writes dst, then stores
// the KEK in the broker (create-only unless WithReplaceKey), so a failed
// run leaves nothing in the broker that blocks its retry; and it pins
// dst's manifest digest in the broker (WithPin; default on for a
// registry dst).
func Encrypt(ctx context.Context, src, dst string, opts ...Option) (*EncryptResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	sref, dref, err := refs(src, dst)
	if err != nil {
		return nil, err
	}
	if !dref.CarriesEncryption() {
		return nil, transport.ErrSinkCannotCarry(dref)
	}
	switch {
	case o.pin != nil && *o.pin && len(o.kbs) == 0:
		return nil, errors.New("pinning needs a broker (WithKBS): the broker holds the pin")
	case o.keyID != nil && len(o.kbs) == 0:
		return nil, errors.New("a key id needs a broker (WithKBS)")
	case len(o.kbs) > 0 && o.keyID == nil:
		return nil, errors.New("a broker needs a key id (WithKeyID) to register the image key at")
	case len(o.recipients) == 0 && len(o.kbs) == 0:
		return nil, ErrNoRecipients
	}
	wrappers := o.recipients
	res := &EncryptResult{}
	var pending interface {
		Commit(context.Context) error
		Discard()
	}
	t := imagecrypt.Transform(nil)
	if len(o.kbs) > 0 {
		admin, err := o.adminClient()
		if err != nil {
			return nil, err
		}
		p, err := admin.PrepareKEKAt(ctx, *o.keyID, o.replaceKey)
		if err != nil {
			return nil, &KEKError{KeyID: *o.keyID, Err: err}
		}
		pending = p
		w, err := aa.NewWrapperFor(p.Key, *o.keyID)
		if err != nil {
			p.Discard()
			return nil, err
		}
		wrappers, res.KID = append(append([]keywrap.Wrapper(nil), wrappers...), w), p.KID
		if o.pin == nil && imagepolicy.IsRegistry(dref) || o.pin != nil && *o.pin {
			onPin := o.onPin
			if onPin == nil {
				onPin = func(imagepolicy.Pinned) {}
			}
			if t, err = imagepolicy.PinOnWrite(imagecrypt.EncryptFor(wrappers...), admin, o.keyID.Repo, dref, onPin); err != nil {
				p.Discard()
				return nil, err
			}
		}
	}
	if t == nil {
		t = imagecrypt.EncryptFor(wrappers...)
	}
	iopts := append([]imagecrypt.Option{imagecrypt.WithKeys(o.keys...)}, o.image...)
	n, err := imagecrypt.Copy(ctx, sref, dref, t, o.transport, iopts...)
	if err != nil {
		if pending != nil {
			pending.Discard()
		}
		return nil, err
	}
	res.Layers = n
	if pending != nil {
		if err := pending.Commit(ctx); err != nil {
			return res, &KEKError{KeyID: *o.keyID, Committed: true, Err: err}
		}
		o.logger.Info("registered the image key in the broker", "key-id", res.KID)
	}
	return res, nil
}

// Decrypt decrypts the encrypted layers of src and writes dst; every
// layer is authenticated before dst is touched. Keys: WithKeys, then the
// broker (WithKBS, after attestation; each key fetched once).
func Decrypt(ctx context.Context, src, dst string, opts ...Option) (int, error) {
	o, err := newOptions(opts)
	if err != nil {
		return 0, err
	}
	sref, dref, err := refs(src, dst)
	if err != nil {
		return 0, err
	}
	unw, _, err := o.unwrappers()
	if err != nil {
		return 0, err
	}
	if len(unw) == 0 {
		return 0, errors.New("no keys: give private keys (WithKeys) or a broker (WithKBS)")
	}
	return imagecrypt.Copy(ctx, sref, dref, imagecrypt.Decrypt, o.transport, append([]imagecrypt.Option{imagecrypt.WithKeys(unw...)}, o.image...)...)
}

// Pull fetches image, checks it (the broker's digest pin with WithKBS,
// WithPolicy, an @sha256 digest), decrypts and unpacks it into rootfs,
// which must not exist; its config goes to rootfs.config.json.
func Pull(ctx context.Context, image, rootfs string, opts ...Option) error {
	o, err := newOptions(opts)
	if err != nil {
		return err
	}
	ref, err := transport.Parse(image)
	if err != nil {
		return err
	}
	unw, c, err := o.unwrappers()
	if err != nil {
		return err
	}
	chk, err := o.checker(ctx, c, o.requireSig)
	if err != nil {
		return err
	}
	popts := []pull.Option{pull.WithKeys(unw...), pull.WithTransport(o.transport...), pull.WithVerify(chk.Verify), pull.WithLogger(o.logger)}
	if o.platform != nil {
		popts = append(popts, pull.WithPlatform(*o.platform))
	}
	return pull.Pull(ctx, ref, rootfs, append(popts, o.pull...)...)
}

// Verify runs the checks Pull runs before it fetches any layer (on the
// image for WithPlatform when image is an index); an image nothing vouches
// for is an error.
func Verify(ctx context.Context, image string, opts ...Option) (imagepolicy.Result, error) {
	o, err := newOptions(opts)
	if err != nil {
		return imagepolicy.Result{}, err
	}
	ref, err := transport.Parse(image)
	if err != nil {
		return imagepolicy.Result{}, err
	}
	var c *client.Client
	if o.hasBroker() {
		if c, err = o.brokerClient(); err != nil {
			return imagepolicy.Result{}, err
		}
	}
	chk, err := o.checker(ctx, c, true)
	if err != nil {
		return imagepolicy.Result{}, err
	}
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if o.platform != nil {
		p = *o.platform
	}
	return chk.Check(ctx, ref, p)
}

// unwrappers are the local keys, then the broker's (each key fetched once).
func (o *options) unwrappers() ([]keywrap.Unwrapper, *client.Client, error) {
	unw := append([]keywrap.Unwrapper(nil), o.keys...)
	if !o.hasBroker() {
		return unw, nil, nil
	}
	c, err := o.brokerClient()
	if err != nil {
		return nil, nil, err
	}
	return append(unw, aa.NewUnwrapper(resource.Once(c))), c, nil
}

// PolicyError is a signature policy (WithPolicy) that could not be read
// or parsed.
type PolicyError struct {
	Src string
	Err error
}

func (e *PolicyError) Error() string { return fmt.Sprintf("policy %s: %v", e.Src, e.Err) }
func (e *PolicyError) Unwrap() error { return e.Err }

// Checker returns the image checker Pull and Verify use: the digest pins
// of the broker c (nil: none) and the signature policy (WithPolicy,
// WithSignatureLookaside); require refuses an image nothing vouches for
// (WithRequireSignature is or-ed in).
func Checker(ctx context.Context, c *client.Client, require bool, opts ...Option) (*imagepolicy.Checker, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	return o.checker(ctx, c, require || o.requireSig)
}

// checker is the image checker: the broker's digest pins (c not nil) and
// the signature policy.
func (o *options) checker(ctx context.Context, c *client.Client, require bool) (*imagepolicy.Checker, error) {
	copts := []imagepolicy.Option{imagepolicy.WithLogger(o.logger), imagepolicy.WithTransport(o.transport...),
		imagepolicy.WithRequireSignature(require), imagepolicy.WithLookaside(o.lookaside)}
	var fetch resource.Getter
	if c != nil {
		fetch = c
		copts = append(copts, imagepolicy.WithPins(fetch))
	}
	if o.policy != "" {
		p, err := imagepolicy.LoadPolicy(ctx, o.policy, fetch)
		if err != nil {
			return nil, &PolicyError{Src: o.policy, Err: err}
		}
		copts = append(copts, imagepolicy.WithPolicy(p))
	}
	return imagepolicy.New(copts...)
}

func refs(src, dst string) (transport.Reference, transport.Reference, error) {
	s, err := transport.Parse(src)
	if err != nil {
		return nil, nil, err
	}
	d, err := transport.Parse(dst)
	if err != nil {
		return nil, nil, err
	}
	return s, d, nil
}
