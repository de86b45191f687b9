package transport

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/coffer-dev/coffer/spec"
)

// BlobFunc opens a blob of the image a Reference names, by digest.
type BlobFunc func(ctx context.Context, h v1.Hash) (io.ReadCloser, error)

// UnverifiedBlobs returns a BlobFunc that reads blobs of a registry
// reference WITHOUT checking them against their digest, or nil for a
// reference whose blobs are local files (nothing to gain there).
//
// It exists for one consumer: decrypting an encrypted layer, whose
// ciphertext is authenticated by its HMAC (key and tag both come from the
// manifest, as the digest does), so a second SHA-256 pass over the same
// bytes adds no assurance. Everything else must read layers through
// v1.Layer, which verifies. The caller bounds the size.
func UnverifiedBlobs(ref Reference, opts ...Option) (BlobFunc, error) {
	r, ok := ref.(dockerRef)
	if !ok {
		return nil, nil
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	repo := r.resolve(o).Context()
	var (
		once   sync.Once
		client *http.Client
		cerr   error
	)
	connect := func(ctx context.Context) (*http.Client, error) {
		once.Do(func() {
			auth := o.auth
			if auth == nil {
				if auth, cerr = o.keychain.Resolve(repo); cerr != nil {
					return
				}
			}
			if auth == nil {
				auth = authn.Anonymous
			}
			var rt http.RoundTripper
			rt, cerr = transport.NewWithContext(ctx, repo.Registry, auth, o.roundTripper(), []string{repo.Scope(transport.PullScope)})
			client = &http.Client{Transport: rt}
		})
		return client, cerr
	}
	return func(ctx context.Context, h v1.Hash) (io.ReadCloser, error) {
		c, err := connect(ctx)
		if err != nil {
			return nil, registryError("reading", r, err)
		}
		u := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), h)}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, registryError("reading", r, err)
		}
		if resp.StatusCode != http.StatusOK {
			err := transport.CheckError(resp, http.StatusOK)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				return nil, fmt.Errorf("reading %s: blob %s: %w", r, h, spec.ErrNotFound)
			}
			return nil, registryError("reading", r, err)
		}
		return resp.Body, nil
	}, nil
}
