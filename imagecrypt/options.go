package imagecrypt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/keywrap"
)

// Option configures Encrypt, Decrypt, Rekey and Inspect.
type Option func(*options) error

type options struct {
	layers       []int
	platforms    []v1.Platform
	unwrappers   []keywrap.Unwrapper
	tempDir      string
	jobs         int
	log          *slog.Logger
	progress     func(Progress)
	blobProgress func(BlobProgress)
	trustSrc     bool
	rawBlobs     func(context.Context, v1.Hash) (io.ReadCloser, error)
}

// Progress reports one finished layer.
type Progress struct {
	Digest v1.Hash
	Bytes  int64
}

func newOptions(opts []Option) (*options, error) {
	o := &options{tempDir: os.TempDir(), jobs: 2, log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		if err := f(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithLayers selects layers by 0-based index; negative indices count from
// the top (-1 is the last layer). Default: all layers. An index out of range
// for a selected manifest is an error.
func WithLayers(idx ...int) Option {
	return func(o *options) error { o.layers = append(o.layers, idx...); return nil }
}

// WithPlatforms selects the manifests of an index by platform (matching as
// v1.Platform.Satisfies). Default: every platform. Unselected manifests are
// copied unchanged.
func WithPlatforms(p ...v1.Platform) Option {
	return func(o *options) error { o.platforms = append(o.platforms, p...); return nil }
}

// WithKeys gives the private keys used to open already-encrypted layers:
// Encrypt adds recipients to such layers and Rekey replaces their recipient
// set. Unwrappers are tried in the order given.
func WithKeys(u ...keywrap.Unwrapper) Option {
	return func(o *options) error { o.unwrappers = append(o.unwrappers, u...); return nil }
}

// WithTempDir sets where processed layers are staged before they are
// handed to the writer. Default: os.TempDir().
func WithTempDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("empty temp dir")
		}
		o.tempDir = dir
		return nil
	}
}

// WithJobs sets how many layers are processed at once. Default: 2.
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs must be at least 1, got %d", n)
		}
		o.jobs = n
		return nil
	}
}

// WithTrustedSource skips re-hashing source blobs during encryption. By
// default (false) Encrypt hashes every plaintext blob as it reads it and
// fails if it does not match its descriptor: a third SHA-256 pass beside the
// HMAC and the ciphertext digest. Skip it only for sources that verify
// themselves (registry pulls through go-containerregistry do).
func WithTrustedSource(trust bool) Option {
	return func(o *options) error { o.trustSrc = trust; return nil }
}

// WithUnverifiedBlobs makes Decrypt read encrypted layers through f, which
// returns a blob's bytes without checking them against the digest
// (transport.UnverifiedBlobs for a registry). Decrypt authenticates the
// ciphertext with the layer's HMAC, whose key and tag the manifest carries
// as it carries the digest, so the bytes are hashed once instead of twice.
// Only Decrypt uses f; blobs that are copied unchanged are read verified.
func WithUnverifiedBlobs(f func(ctx context.Context, h v1.Hash) (io.ReadCloser, error)) Option {
	return func(o *options) error { o.rawBlobs = f; return nil }
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithProgress calls f (from several goroutines) as each layer finishes.
func WithProgress(f func(Progress)) Option {
	return func(o *options) error { o.progress = f; return nil }
}

// selected resolves the layer selection against n layers.
func (o *options) selected(n int) (map[int]bool, error) {
	sel := map[int]bool{}
	if len(o.layers) == 0 {
		for i := range n {
			sel[i] = true
		}
		return sel, nil
	}
	for _, i := range o.layers {
		j := i
		if j < 0 {
			j += n
		}
		if j < 0 || j >= n {
			return nil, fmt.Errorf("layer index %d is out of range: the image has %d layers (valid: 0..%d or -%d..-1)", i, n, n-1, n)
		}
		sel[j] = true
	}
	return sel, nil
}

func (o *options) platformSelected(p *v1.Platform) bool {
	if len(o.platforms) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, want := range o.platforms {
		if p.Satisfies(want) {
			return true
		}
	}
	return false
}
