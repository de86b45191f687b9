// Package transport maps skopeo-style image references onto
// go-containerregistry: oci:DIR[:TAG], docker://REF, oci-archive:FILE[:TAG]
// and docker-archive:FILE[:REF]. Writers are all-or-nothing where the
// medium allows it.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/spec"
)

// Reference is a parsed image reference.
type Reference interface {
	// Transport is "oci", "docker", "oci-archive" or "docker-archive".
	Transport() string
	String() string
	// LocalPath is the directory (oci) or file (archives) on this machine,
	// "" for a registry.
	LocalPath() string
	// ContentVerified reports whether reading checks every blob against its
	// digest on the way (registries: go-containerregistry verifies at EOF),
	// so a consumer need not hash it again.
	ContentVerified() bool
	// CarriesEncryption reports whether the sink can store encrypted
	// layers (OCI media types and the enc annotations). A Docker image
	// archive cannot: Write refuses an encrypted artifact there.
	CarriesEncryption() bool
}

// Artifact is what a reference holds: exactly one of Image or Index is set.
type Artifact struct {
	Image v1.Image
	Index v1.ImageIndex
}

// Option configures Read and Write.
type Option func(*options) error

type options struct {
	insecure  bool
	keychain  authn.Keychain
	auth      authn.Authenticator
	transport http.RoundTripper
	progress  chan<- v1.Update
	jobs      int
}

func newOptions(opts []Option) (*options, error) {
	o := &options{keychain: authn.DefaultKeychain, jobs: 4}
	for _, f := range opts {
		if err := f(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithInsecure allows plain HTTP and unverified TLS for every registry.
// Loopback registries (127.0.0.0/8, localhost, ::1) are always allowed
// over plain HTTP. Default false.
func WithInsecure(b bool) Option { return func(o *options) error { o.insecure = b; return nil } }

// WithCreds sets registry credentials as "USER:PASSWORD" (skopeo --creds).
// Default: docker config.json through authn.DefaultKeychain.
func WithCreds(userpass string) Option {
	return func(o *options) error {
		u, p, ok := strings.Cut(userpass, ":")
		if !ok || u == "" {
			return errors.New("--creds must be USER:PASSWORD")
		}
		o.auth = &authn.Basic{Username: u, Password: p}
		return nil
	}
}

// WithKeychain sets the keychain used when no credentials are given.
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) error { o.keychain = k; return nil }
}

// WithTransport sets the HTTP transport for registries. Default: remote's.
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) error { o.transport = rt; return nil }
}

// WithProgress receives registry upload progress updates.
func WithProgress(c chan<- v1.Update) Option {
	return func(o *options) error { o.progress = c; return nil }
}

// WithJobs sets how many blobs move in parallel. Default 4.
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs must be at least 1, got %d", n)
		}
		o.jobs = n
		return nil
	}
}

type localRef struct {
	transport, path, tag string
	digest               v1.Hash // oci:DIR@sha256:… (zero: by tag)
}

func (r localRef) Transport() string     { return r.transport }
func (r localRef) LocalPath() string     { return r.path }
func (r localRef) ContentVerified() bool { return false }
func (r localRef) CarriesEncryption() bool {
	return r.transport != "docker-archive"
}
func (r localRef) String() string {
	if r.digest != (v1.Hash{}) {
		return r.transport + ":" + r.path + "@" + r.digest.String()
	}
	if r.tag == "" {
		return r.transport + ":" + r.path
	}
	return r.transport + ":" + r.path + ":" + r.tag
}

type dockerRef struct {
	ref name.Reference
}

func (r dockerRef) Transport() string       { return "docker" }
func (r dockerRef) LocalPath() string       { return "" }
func (r dockerRef) ContentVerified() bool   { return true }
func (r dockerRef) CarriesEncryption() bool { return true }
func (r dockerRef) String() string          { return "docker://" + r.ref.String() }

// Parse parses a reference: oci:DIR[:TAG], docker://HOST/REPO[:TAG|@DIGEST],
// oci-archive:FILE[:TAG], docker-archive:FILE[:REF].
func Parse(s string) (Reference, error) {
	tr, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("image reference %q has no transport: use oci:DIR[:TAG], docker://REF, oci-archive:FILE[:TAG] or docker-archive:FILE", s)
	}
	switch tr {
	case "docker":
		if !strings.HasPrefix(rest, "//") {
			return nil, fmt.Errorf("image reference %q: docker references look like docker://HOST/REPO:TAG", s)
		}
		ref, err := name.ParseReference(rest[2:], name.StrictValidation)
		if err != nil {
			// Accept short forms (docker://alpine) like skopeo does.
			if ref, err = name.ParseReference(rest[2:]); err != nil {
				return nil, fmt.Errorf("image reference %q: %v", s, err)
			}
		}
		return dockerRef{ref}, nil
	case "oci", "oci-archive":
		if i := strings.LastIndex(rest, "@sha256:"); i >= 0 {
			h, err := v1.NewHash(rest[i+1:])
			if err != nil || rest[:i] == "" {
				return nil, fmt.Errorf("image reference %q: want %s:DIR@sha256:<64 hex>", s, tr)
			}
			return localRef{transport: tr, path: rest[:i], digest: h}, nil
		}
		path, tag := rest, ""
		if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.ContainsRune(rest[i:], '/') {
			path, tag = rest[:i], rest[i+1:]
			if tag == "" {
				return nil, fmt.Errorf("image reference %q: empty tag after ':'", s)
			}
			if strings.ContainsAny(tag, " \t\n") {
				return nil, fmt.Errorf("image reference %q: tag %q contains white space", s, tag)
			}
		}
		if path == "" {
			return nil, fmt.Errorf("image reference %q: empty path", s)
		}
		return localRef{transport: tr, path: path, tag: tag}, nil
	case "docker-archive":
		path, tag, _ := strings.Cut(rest, ":")
		if path == "" {
			return nil, fmt.Errorf("image reference %q: empty path", s)
		}
		if tag != "" {
			if _, err := name.NewTag(tag); err != nil {
				return nil, fmt.Errorf("image reference %q: %v", s, err)
			}
		}
		return localRef{transport: tr, path: path, tag: tag}, nil
	}
	return nil, fmt.Errorf("image reference %q: unknown transport %q (want oci, docker, oci-archive or docker-archive): %w", s, tr, spec.ErrUnsupported)
}

// NamedDigest returns the manifest digest a reference names
// (docker://HOST/REPO@sha256:…, oci:DIR@sha256:…, oci-archive:FILE@sha256:…).
// Reading such a reference yields the manifest listed under that digest; its
// bytes are checked against it by imagepolicy, not here.
func NamedDigest(ref Reference) (v1.Hash, bool) {
	switch r := ref.(type) {
	case dockerRef:
		if d, ok := r.ref.(name.Digest); ok {
			h, err := v1.NewHash(d.DigestStr())
			return h, err == nil
		}
	case localRef:
		return r.digest, r.digest != (v1.Hash{})
	}
	return v1.Hash{}, false
}

// LocalTag returns the tag of an oci: or oci-archive: reference ("" if none).
func LocalTag(ref Reference) string {
	if r, ok := ref.(localRef); ok {
		return r.tag
	}
	return ""
}

// DockerName returns the registry name of a docker:// reference.
func DockerName(ref Reference) (name.Reference, bool) {
	if r, ok := ref.(dockerRef); ok {
		return r.ref, true
	}
	return nil, false
}

// Read opens the artifact at ref. The returned func releases temporary data.
func Read(ctx context.Context, ref Reference, opts ...Option) (Artifact, func() error, error) {
	o, err := newOptions(opts)
	if err != nil {
		return Artifact{}, nil, err
	}
	noop := func() error { return nil }
	switch r := ref.(type) {
	case dockerRef:
		a, err := readRemote(ctx, r, o)
		return a, noop, err
	case localRef:
		switch r.transport {
		case "oci":
			a, err := readLayout(r.path, r.tag, r.digest)
			return a, noop, err
		case "oci-archive":
			return readOCIArchive(ctx, r)
		case "docker-archive":
			a, err := readDockerArchive(r)
			return a, noop, err
		}
	}
	return Artifact{}, nil, fmt.Errorf("reading %s: unsupported reference", ref)
}

// Write stores a at ref.
func Write(ctx context.Context, ref Reference, a Artifact, opts ...Option) error {
	o, err := newOptions(opts)
	if err != nil {
		return err
	}
	if (a.Image == nil) == (a.Index == nil) {
		return errors.New("internal: artifact must hold exactly one of image or index")
	}
	if !ref.CarriesEncryption() {
		if err := refuseEncrypted(ref, a); err != nil {
			return err
		}
	}
	switch r := ref.(type) {
	case dockerRef:
		return writeRemote(ctx, r, a, o)
	case localRef:
		if r.digest != (v1.Hash{}) {
			return fmt.Errorf("writing %s: a digest names existing content; write to a tag instead: %w", ref, spec.ErrUnsupported)
		}
		switch r.transport {
		case "oci":
			return writeLayout(ctx, r.path, r.tag, a)
		case "oci-archive":
			return writeOCIArchive(ctx, r, a)
		case "docker-archive":
			return writeDockerArchive(r, a)
		}
	}
	return fmt.Errorf("writing %s: unsupported reference", ref)
}

// isLoopback reports whether a registry host is on this machine.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// ErrSinkCannotCarry explains why an encrypted artifact cannot go to ref.
func ErrSinkCannotCarry(ref Reference) error {
	return fmt.Errorf("%s cannot carry encrypted layers (a Docker image archive has no media type or annotations for them, so the keys would be dropped and the ciphertext labelled as plain layers): write to oci:, oci-archive: or docker:// instead: %w", ref, spec.ErrUnsupported)
}

// refuseEncrypted fails when any layer of a (any image of an index) is
// encrypted. It reads manifests only.
func refuseEncrypted(ref Reference, a Artifact) error {
	var imgs []v1.Image
	if a.Image != nil {
		imgs = append(imgs, a.Image)
	} else {
		im, err := a.Index.IndexManifest()
		if err != nil {
			return fmt.Errorf("writing %s: %w", ref, err)
		}
		for _, d := range im.Manifests {
			if !d.MediaType.IsImage() {
				continue
			}
			img, err := a.Index.Image(d.Digest)
			if err != nil {
				return fmt.Errorf("writing %s: %w", ref, err)
			}
			imgs = append(imgs, img)
		}
	}
	for _, img := range imgs {
		m, err := img.Manifest()
		if err != nil {
			return fmt.Errorf("writing %s: %w", ref, err)
		}
		for _, l := range m.Layers {
			if strings.HasSuffix(string(l.MediaType), spec.EncryptedSuffix) {
				return ErrSinkCannotCarry(ref)
			}
		}
	}
	return nil
}
