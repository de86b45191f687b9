// Package pull fetches an image, unwraps its layer keys (local keys first,
// then the key broker through attestation), decrypts and verifies every
// layer, and unpacks the result into a root file system.
package pull

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/staging"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
	"github.com/coffer-dev/coffer/unpack"
)

// Option configures Pull.
type Option func(*options) error

type options struct {
	keys      []keywrap.Unwrapper
	platform  v1.Platform
	transport []transport.Option
	log       *slog.Logger
	jobs      int
	unpack    []unpack.Option
	verify    []VerifyFunc
	progress  func(imagecrypt.BlobProgress)
}

// VerifyFunc vouches for an image before anything of it is decrypted or
// unpacked: it gets the reference as given, the artifact read from it and
// the image picked for this platform, and returns an error to refuse it.
// imagepolicy.Checker.Verify is one (digest pins, signature policy).
type VerifyFunc func(ctx context.Context, ref transport.Reference, a transport.Artifact, img v1.Image) error

// WithVerify adds a check run on the manifest (and, for an index, the
// picked image) before the config is used or any layer is fetched. Checks
// run in order; the first error aborts the pull with nothing unpacked.
func WithVerify(f VerifyFunc) Option {
	return func(o *options) error { o.verify = append(o.verify, f); return nil }
}

// WithKeys adds unwrappers, tried in order. Put local keys first and the
// broker-backed attestation-agent unwrapper last, so attestation happens
// only when a layer needs it.
func WithKeys(u ...keywrap.Unwrapper) Option {
	return func(o *options) error { o.keys = append(o.keys, u...); return nil }
}

// WithPlatform picks the manifest of an index. Default: this machine's
// linux/GOARCH.
func WithPlatform(p v1.Platform) Option {
	return func(o *options) error { o.platform = p; return nil }
}

// WithTransport passes registry options through.
func WithTransport(t ...transport.Option) Option {
	return func(o *options) error { o.transport = append(o.transport, t...); return nil }
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithJobs sets how many layers download and decrypt at once. Default 2.
func WithJobs(n int) Option {
	return func(o *options) error { o.jobs = n; return nil }
}

// WithBlobProgress reports the bytes of each encrypted layer's blob as it
// is read and decrypted (imagecrypt.WithBlobProgress).
func WithBlobProgress(f func(imagecrypt.BlobProgress)) Option {
	return func(o *options) error { o.progress = f; return nil }
}

// WithUnpack passes options through to unpack.Apply, for example
// unpack.WithMaxFileSize and unpack.WithMaxRootfsSize to raise or lower the
// bounds on what the image may unpack to (defaults: 64 GiB per file, 256 GiB
// in all, holes of sparse files included; see unpack.DefaultMaxFileSize and
// unpack.DefaultMaxRootfsSize).
func WithUnpack(u ...unpack.Option) Option {
	return func(o *options) error { o.unpack = append(o.unpack, u...); return nil }
}

// Pull writes the image at ref as a root file system at rootfs (which must
// not exist) and its config as rootfs + ".config.json". On any failure
// neither is left behind.
func Pull(ctx context.Context, ref transport.Reference, rootfs string, opts ...Option) error {
	o := &options{platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, log: slog.New(slog.DiscardHandler), jobs: 2}
	for _, f := range opts {
		if err := f(o); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(rootfs); err == nil {
		return fmt.Errorf("rootfs %s already exists: choose a new directory", rootfs)
	}
	parent := filepath.Dir(filepath.Clean(rootfs))
	stage, err := staging.MkdirTemp(parent, ".coffer-pull-") // sweeps what a killed run left
	if err != nil {
		return fmt.Errorf("creating staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	a, closeSrc, err := transport.Read(ctx, ref, o.transport...)
	if err != nil {
		return err
	}
	defer closeSrc()
	img, err := pickImage(a, o.platform)
	if err != nil {
		return err
	}
	for _, v := range o.verify {
		if err := v(ctx, ref, a, img); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading image config: %w", err)
	}
	dopts := []imagecrypt.Option{imagecrypt.WithKeys(o.keys...), imagecrypt.WithTempDir(stage), imagecrypt.WithJobs(o.jobs), imagecrypt.WithLogger(o.log)}
	// A registry's encrypted blobs are authenticated by their HMAC: skip
	// go-containerregistry's digest pass over the same bytes.
	raw, err := transport.UnverifiedBlobs(ref, o.transport...)
	if err != nil {
		return err
	}
	if raw != nil {
		dopts = append(dopts, imagecrypt.WithUnverifiedBlobs(raw))
	}
	if o.progress != nil {
		dopts = append(dopts, imagecrypt.WithBlobProgress(o.progress))
	}
	res, err := imagecrypt.Decrypt(ctx, imagecrypt.Artifact{Image: img}, dopts...)
	if err != nil {
		return err
	}
	defer res.Close()
	m, err := res.Image.Manifest()
	if err != nil {
		return err
	}
	orig, err := img.Manifest()
	if err != nil {
		return err
	}
	layers := make([]unpack.Layer, len(m.Layers))
	for i, d := range m.Layers {
		if spec.IsEncrypted(string(d.MediaType)) {
			return fmt.Errorf("layer %d is still encrypted: %w", i, spec.ErrNoKey)
		}
		l, err := res.Image.LayerByDigest(d.Digest)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		// A layer that was encrypted was size-checked while it was decrypted;
		// a plain one is held to its declared size here.
		ul := unpack.Layer{MediaType: string(d.MediaType), Open: func() (io.ReadCloser, error) { return imagecrypt.OpenBlob(l, d) }}
		if i < len(cfg.RootFS.DiffIDs) {
			ul.DiffID = cfg.RootFS.DiffIDs[i]
		}
		// An uncompressed layer's diffID is its digest: for a layer that was
		// encrypted, imagecrypt already verified exactly that digest on the
		// plaintext, so unpack need not hash it a second time.
		if ul.DiffID == d.Digest && uncompressed(d.MediaType) && i < len(orig.Layers) && spec.IsEncrypted(string(orig.Layers[i].MediaType)) {
			ul.DiffID = v1.Hash{}
		}
		layers[i] = ul
	}
	o.log.Info("unpacking", "layers", len(layers), "rootfs", rootfs)
	uopts := append([]unpack.Option{unpack.WithLogger(o.log)}, o.unpack...)
	// The config first, the rootfs (renamed into place by unpack) last: a
	// run killed in between leaves a config and no rootfs, never a rootfs
	// without its config, and the rerun replaces the config.
	if err := unpack.WriteConfig(rootfs+".config.json", cfg); err != nil {
		return err
	}
	if err := unpack.Apply(ctx, rootfs, layers, uopts...); err != nil {
		os.Remove(rootfs + ".config.json")
		return err
	}
	return nil
}

func pickImage(a transport.Artifact, want v1.Platform) (v1.Image, error) {
	if a.Image != nil {
		return a.Image, nil
	}
	im, err := a.Index.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("parsing index: %w", err)
	}
	var seen []string
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() || d.Platform == nil {
			continue
		}
		seen = append(seen, d.Platform.String())
		if d.Platform.Satisfies(want) {
			return a.Index.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no manifest for platform %s in the index (it has %v): %w", want.String(), seen, spec.ErrNotFound)
}

func uncompressed(mt types.MediaType) bool {
	return mt == types.OCIUncompressedLayer || mt == types.DockerUncompressedLayer ||
		mt == types.OCIUncompressedRestrictedLayer
}
