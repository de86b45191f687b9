// Package imagepolicy decides whether an image may run: digest pins the
// key broker holds for an image name, containers-policy.json signature
// policies (sigstore/cosign and GPG simple signing verifiers behind one
// interface), and digests named in the reference. A Checker runs on the
// manifest before anything of the image is decrypted or unpacked
// (pull.WithVerify), and on its own for `coffer verify`.
package imagepolicy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// ResourceFetcher is a func that is a resource.Getter, the shape this
// package takes to fetch a broker resource after attestation (agent/client's
// Client is one). A missing resource must wrap spec.ErrNotFound.
type ResourceFetcher = resource.GetterFunc

// Option configures New.
type Option func(*options) error

type options struct {
	fetch     resource.Getter
	policy    *Policy
	require   bool
	log       *slog.Logger
	transport []transport.Option
	lookaside string
}

// WithLookaside sets where simple signing (GPG) signatures are read: a
// directory or an http(s):// URL laid out as containers/image's lookaside
// ("<base>/<registry>/<repo>@sha256=<hex>/signature-<n>").
func WithLookaside(base string) Option {
	return func(o *options) error { o.lookaside = base; return nil }
}

// WithPins makes the checker look up the digest pin of the image in the
// broker (PinPath) through fetch, and enforce it when one exists.
func WithPins(fetch resource.Getter) Option {
	return func(o *options) error { o.fetch = nonNil(fetch); return nil }
}

// WithPolicy enforces a containers-policy.json policy.
func WithPolicy(p *Policy) Option {
	return func(o *options) error { o.policy = p; return nil }
}

// WithRequireSignature refuses an image nothing vouches for (no pin, no
// signature verified by the policy, no digest in the reference) instead of
// warning. Default false: warn once per Checker.
func WithRequireSignature(b bool) Option {
	return func(o *options) error { o.require = b; return nil }
}

// WithLogger sets the logger the warning goes to. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithTransport passes registry options used to fetch signatures.
func WithTransport(t ...transport.Option) Option {
	return func(o *options) error { o.transport = append(o.transport, t...); return nil }
}

// Checker verifies images. It is safe for concurrent use.
type Checker struct {
	o      options
	warned sync.Once
}

// New returns a Checker.
func New(opts ...Option) (*Checker, error) {
	c := &Checker{o: options{log: slog.Default()}}
	for _, f := range opts {
		if err := f(&c.o); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Result says what vouched for an image.
type Result struct {
	// Digest is the digest of the manifest (or index) the reference resolved to.
	Digest v1.Hash
	// Image is the digest of the image manifest picked (Digest unless an index).
	Image v1.Hash
	// Vouched lists what vouched for it, e.g. "digest pinned in the broker at kbs:///…".
	Vouched []string
}

// Unverified is the warning (or, with WithRequireSignature, the error) for
// an image nothing vouches for.
const Unverified = "the image's integrity is not verified (no digest pin, no signature policy, no @sha256 digest): " +
	"pin it when encrypting (coffer encrypt --kbs … --pin), sign it (coffer sign) and pull with --policy, or pull IMAGE@sha256:…"

// Verify is a pull.VerifyFunc: it refuses img (read from ref as a) unless
// every configured check passes, and warns once (or refuses, with
// WithRequireSignature) when nothing vouches for it.
func (c *Checker) Verify(ctx context.Context, ref transport.Reference, a transport.Artifact, img v1.Image) error {
	_, err := c.check(ctx, ref, a, img)
	return err
}

// Check reads ref, picks the image for platform (an index) and verifies it
// without fetching any layer: coffer verify.
func (c *Checker) Check(ctx context.Context, ref transport.Reference, platform v1.Platform) (Result, error) {
	a, closeFn, err := transport.Read(ctx, ref, c.o.transport...)
	if err != nil {
		return Result{}, err
	}
	defer closeFn()
	img := a.Image
	if img == nil {
		if img, err = pickImage(a.Index, platform); err != nil {
			return Result{}, err
		}
	}
	return c.check(ctx, ref, a, img)
}

func (c *Checker) check(ctx context.Context, ref transport.Reference, a transport.Artifact, img v1.Image) (Result, error) {
	var r Result
	top, err := rawManifest(a)
	if err != nil {
		return r, err
	}
	r.Digest = sha256Hash(top)
	if want, ok := transport.NamedDigest(ref); ok {
		if want != r.Digest {
			return r, fmt.Errorf("%s: the manifest served has digest %s, not the %s the reference names: refusing it: %w", ref, r.Digest, want, spec.ErrIntegrity)
		}
		r.Vouched = append(r.Vouched, "digest named in the reference")
	}
	imgRaw, err := img.RawManifest()
	if err != nil {
		return r, fmt.Errorf("reading manifest of %s: %w", ref, err)
	}
	r.Image = sha256Hash(imgRaw)
	if a.Index != nil {
		if err := listed(top, r.Image); err != nil {
			return r, fmt.Errorf("%s: %w", ref, err)
		}
	} else if r.Image != r.Digest {
		return r, fmt.Errorf("%s: the image read is not the manifest resolved: %w", ref, spec.ErrIntegrity)
	}
	if err := configMatches(img, imgRaw); err != nil {
		return r, fmt.Errorf("%s: %w", ref, err)
	}
	if c.o.fetch != nil {
		v, err := c.checkPins(ctx, ref, img, r.Digest)
		if err != nil {
			return r, err
		}
		r.Vouched = append(r.Vouched, v...)
	}
	if c.o.policy != nil {
		v, err := c.o.policy.Evaluate(ctx, Image{Ref: ref, Digest: r.Digest, Manifest: top, transport: c.o.transport, lookaside: c.o.lookaside})
		if err != nil {
			return r, err
		}
		r.Vouched = append(r.Vouched, v...)
	}
	if len(r.Vouched) == 0 {
		if c.o.require {
			return r, fmt.Errorf("%s: %s: %w", ref, Unverified, spec.ErrPolicyDenied)
		}
		c.warned.Do(func() { c.o.log.Warn(Unverified, "image", ref.String()) })
	}
	return r, nil
}

// checkPins enforces the pin of ref's identity in the default repo and in
// the repos of the broker key ids the image's layers name. Every pin found
// must match; none found is no vouching (a registry cannot delete a pin).
func (c *Checker) checkPins(ctx context.Context, ref transport.Reference, img v1.Image, got v1.Hash) ([]string, error) {
	id, ok := Identity(ref)
	if !ok {
		return nil, nil
	}
	var vouched []string
	for _, repo := range pinRepos(img) {
		path := PinPath(repo, id)
		raw, err := c.o.fetch.Get(ctx, path)
		if errors.Is(err, spec.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("fetching the digest pin of %s: %w", id, err) // err names the pin's path
		}
		p, err := ParsePin(raw)
		if err != nil {
			return nil, fmt.Errorf("digest pin kbs:///%s: %w", path, err)
		}
		if p.Reference != id {
			return nil, fmt.Errorf("digest pin kbs:///%s is for %s, not %s: %w", path, p.Reference, id, spec.ErrIntegrity)
		}
		if p.Digest != got {
			return nil, fmt.Errorf("%s changed since it was pinned: the broker pins manifest %s (kbs:///%s), the image served is %s: refusing it "+
				"(if its owner rewrote it, e.g. with coffer rekey, the owner re-pins: coffer kbs pin --digest %s %s): %w",
				id, p.Digest, path, got, got, id, spec.ErrIntegrity)
		}
		vouched = append(vouched, "digest pinned in the broker at kbs:///"+path.String())
	}
	return vouched, nil
}

// pinRepos is "default" plus the repos of the broker key ids in img's
// layer annotations (at most 8; duplicates once).
func pinRepos(img v1.Image) []string {
	repos := []string{resource.DefaultRepo}
	m, err := img.Manifest()
	if err != nil {
		return repos
	}
	for _, l := range m.Layers {
		for _, e := range strings.Split(l.Annotations[spec.AnnotationKeyPrefix+aa.Scheme], ",") {
			if len(repos) >= 8 {
				return repos
			}
			raw, err := base64.StdEncoding.DecodeString(e)
			if err != nil {
				continue
			}
			kid, err := aa.Describe(raw)
			if err != nil {
				continue
			}
			p, err := resource.ParseKID(kid)
			if err != nil {
				continue
			}
			seen := false
			for _, r := range repos {
				seen = seen || r == p.Repo
			}
			if !seen {
				repos = append(repos, p.Repo)
			}
		}
	}
	return repos
}

func rawManifest(a transport.Artifact) ([]byte, error) {
	if a.Image != nil {
		return a.Image.RawManifest()
	}
	if a.Index != nil {
		return a.Index.RawManifest()
	}
	return nil, errors.New("empty artifact")
}

// listed checks that the index (raw) lists the image digest h.
func listed(raw []byte, h v1.Hash) error {
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("parsing index: %w", spec.ErrIntegrity)
	}
	for _, d := range im.Manifests {
		if d.Digest == h {
			return nil
		}
	}
	return fmt.Errorf("the image picked (%s) is not in the index: %w", h, spec.ErrIntegrity)
}

const maxConfigSize = 16 << 20

// configMatches checks the config blob against the manifest's descriptor:
// registries verify it on the way, local layouts do not.
func configMatches(img v1.Image, raw []byte) error {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("parsing manifest: %w", spec.ErrIntegrity)
	}
	if m.Config.Size > maxConfigSize {
		return fmt.Errorf("config of %d bytes, more than %d: %w", m.Config.Size, maxConfigSize, spec.ErrUnsupported)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if got := sha256Hash(cfg); got != m.Config.Digest || int64(len(cfg)) != m.Config.Size {
		return fmt.Errorf("config is %s (%d bytes), the manifest names %s (%d bytes): %w", got, len(cfg), m.Config.Digest, m.Config.Size, spec.ErrIntegrity)
	}
	return nil
}

func pickImage(idx v1.ImageIndex, want v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("parsing index: %w", err)
	}
	for _, d := range im.Manifests {
		if d.MediaType.IsImage() && d.Platform != nil && d.Platform.Satisfies(want) {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no manifest for platform %s in the index: %w", want.String(), spec.ErrNotFound)
}

// nonNil is g, or nil when g holds a nil func.
func nonNil(g resource.Getter) resource.Getter {
	if f, ok := g.(resource.GetterFunc); ok && f == nil {
		return nil
	}
	return g
}
