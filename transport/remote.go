package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/coffer-dev/coffer/spec"
)

func (o *options) remoteOptions(ctx context.Context) []remote.Option {
	ro := []remote.Option{remote.WithContext(ctx), remote.WithJobs(o.jobs)}
	if o.auth != nil {
		ro = append(ro, remote.WithAuth(o.auth))
	} else {
		ro = append(ro, remote.WithAuthFromKeychain(o.keychain))
	}
	if o.transport != nil || o.insecure {
		ro = append(ro, remote.WithTransport(o.roundTripper()))
	}
	if o.progress != nil {
		ro = append(ro, remote.WithProgress(o.progress))
	}
	return ro
}

// roundTripper is the HTTP transport under the registry auth: the one
// given, else the default, without TLS verification when --insecure asked.
func (o *options) roundTripper() http.RoundTripper {
	if o.transport != nil {
		return o.transport
	}
	if !o.insecure {
		return remote.DefaultTransport
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --insecure asked for it
	return t
}

// resolve re-parses the reference with name.Insecure when plain HTTP is
// allowed for its registry.
func (r dockerRef) resolve(o *options) name.Reference {
	if !o.insecure && !isLoopback(r.ref.Context().RegistryStr()) {
		return r.ref
	}
	ref, err := name.ParseReference(r.ref.String(), name.Insecure)
	if err != nil {
		return r.ref
	}
	return ref
}

func readRemote(ctx context.Context, r dockerRef, o *options) (Artifact, error) {
	ref := r.resolve(o)
	desc, err := remote.Get(ref, o.remoteOptions(ctx)...)
	if err != nil {
		return Artifact{}, registryError("reading", r, err)
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return Artifact{}, registryError("reading", r, err)
		}
		return Artifact{Index: idx}, nil
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return Artifact{}, registryError("reading", r, err)
		}
		return Artifact{Image: img}, nil
	}
	return Artifact{}, fmt.Errorf("reading %s: manifest media type %s is not an image or index: %w", r, desc.MediaType, spec.ErrUnsupported)
}

func writeRemote(ctx context.Context, r dockerRef, a Artifact, o *options) error {
	ref := r.resolve(o)
	var err error
	if a.Index != nil {
		err = remote.WriteIndex(ref, a.Index, o.remoteOptions(ctx)...)
	} else {
		err = remote.Write(ref, a.Image, o.remoteOptions(ctx)...)
	}
	if err != nil {
		return registryError("pushing to", r, err)
	}
	return nil
}

// registryError turns a registry failure into one line a person can act on.
func registryError(op string, r dockerRef, err error) error {
	host := r.ref.Context().RegistryStr()
	var terr *transport.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", op, r, err)
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%s %s: %w (HTTP %d): check --creds or docker login %s", op, r, spec.ErrUnauthorized, terr.StatusCode, host)
	case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s %s: %w: %s", op, r, spec.ErrNotFound, oneLine(err.Error()))
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%s %s: registry %s unreachable or went away: %s", op, r, host, oneLine(err.Error()))
	case strings.Contains(err.Error(), "http: server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s %s: registry %s speaks plain HTTP: pass --insecure", op, r, host)
	case strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:"):
		return fmt.Errorf("%s %s: TLS failure with %s (trust a private CA with --cacert FILE or COFFER_CACERT; --insecure for a test registry): %s", op, r, host, oneLine(err.Error()))
	}
	if errors.As(err, &terr) && terr.StatusCode == 0 {
		return fmt.Errorf("%s %s: %s", op, r, oneLine(err.Error()))
	}
	return fmt.Errorf("%s %s: %s", op, r, oneLine(err.Error()))
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// maxReferrers bounds the referrers of one digest a caller looks at.
const maxReferrers = 256

// Referrers lists the OCI 1.1 referrers of digest in ref's repository (the
// registry's referrers API, or the sha256-<hex> tag fallback), those of
// artifactType only when it is not "". Local references have none here.
func Referrers(ctx context.Context, ref Reference, digest v1.Hash, artifactType string, opts ...Option) ([]v1.Descriptor, error) {
	r, ok := ref.(dockerRef)
	if !ok {
		return nil, nil
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	d := r.resolve(o).Context().Digest(digest.String())
	ro := o.remoteOptions(ctx)
	if artifactType != "" {
		ro = append(ro, remote.WithFilter("artifactType", artifactType))
	}
	idx, err := remote.Referrers(d, ro...)
	if err != nil {
		return nil, registryError("listing referrers of", r, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", d, err)
	}
	var out []v1.Descriptor
	for _, desc := range im.Manifests {
		if len(out) == maxReferrers {
			break
		}
		if artifactType == "" || desc.ArtifactType == artifactType {
			out = append(out, desc)
		}
	}
	return out, nil
}
