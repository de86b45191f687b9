// Package imagecrypt encrypts, decrypts and re-keys the layers of OCI images
// and indexes in the ocicrypt format, and describes encrypted images.
//
// Layers are processed in parallel and staged in temp files; a layer is
// handed on only after every check passed (HMAC, digests, sizes), so a
// writer never sees unauthenticated plaintext.
package imagecrypt

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/layercrypt"
	"github.com/coffer-dev/coffer/spec"
)

// Encrypt encrypts the selected layers for the recipients behind wrappers.
// Layers that are already encrypted get the new recipients added (this
// needs WithKeys); their blobs are unchanged. Docker schema 2 manifests are
// converted to OCI, since only OCI manifests carry encrypted layers.
func Encrypt(ctx context.Context, in Artifact, wrappers []keywrap.Wrapper, opts ...Option) (*Result, error) {
	if len(wrappers) == 0 {
		return nil, errors.New("no recipients: give at least one")
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	s := &session{o: o, convertDocker: true}
	s.fn = func(ctx context.Context, i int, d v1.Descriptor, l v1.Layer, diffID v1.Hash) (v1.Descriptor, v1.Layer, bool, error) {
		if spec.IsEncrypted(string(d.MediaType)) {
			if len(o.unwrappers) == 0 {
				return d, nil, false, fmt.Errorf("already encrypted: to add recipients, also pass --key with one of its private keys")
			}
			nd, err := s.rewrap(ctx, d, wrappers, false)
			return nd, nil, err == nil, err
		}
		return s.encryptLayer(ctx, d, l, diffID, wrappers)
	}
	return s.run(ctx, in)
}

// Rekey replaces the recipient set of the selected encrypted layers with
// the recipients behind wrappers (key rotation). It needs WithKeys to open
// the layers; blobs, digests and sizes stay the same.
func Rekey(ctx context.Context, in Artifact, wrappers []keywrap.Wrapper, opts ...Option) (*Result, error) {
	if len(wrappers) == 0 {
		return nil, errors.New("no recipients: rekey needs the new recipient set")
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if len(o.unwrappers) == 0 {
		return nil, fmt.Errorf("rekey needs a current private key (--key): %w", spec.ErrNoKey)
	}
	s := &session{o: o}
	s.fn = func(ctx context.Context, i int, d v1.Descriptor, l v1.Layer, _ v1.Hash) (v1.Descriptor, v1.Layer, bool, error) {
		if !spec.IsEncrypted(string(d.MediaType)) {
			return d, nil, false, nil
		}
		nd, err := s.rewrap(ctx, d, wrappers, true)
		return nd, nil, err == nil, err
	}
	return s.run(ctx, in)
}

// Decrypt decrypts the selected encrypted layers with the keys given by
// WithKeys (none are needed when no selected layer is encrypted). Every layer is verified (HMAC over the ciphertext, then the
// plaintext digest against the wrapped options) before it is handed on.
func Decrypt(ctx context.Context, in Artifact, opts ...Option) (*Result, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	s := &session{o: o}
	s.fn = func(ctx context.Context, i int, d v1.Descriptor, l v1.Layer, diffID v1.Hash) (v1.Descriptor, v1.Layer, bool, error) {
		if !spec.IsEncrypted(string(d.MediaType)) {
			return d, nil, false, nil
		}
		if len(o.unwrappers) == 0 {
			return d, nil, false, fmt.Errorf("layer %d is encrypted and no decryption key was given: %w", i, spec.ErrNoKey)
		}
		return s.decryptLayer(ctx, d, l, diffID)
	}
	return s.run(ctx, in)
}

func (s *session) encryptLayer(ctx context.Context, d v1.Descriptor, l v1.Layer, diffID v1.Hash, wrappers []keywrap.Wrapper) (v1.Descriptor, v1.Layer, bool, error) {
	emt, err := spec.EncryptedMediaType(string(d.MediaType))
	if err != nil {
		return d, nil, false, err
	}
	k, err := layercrypt.NewKey()
	if err != nil {
		return d, nil, false, err
	}
	defer clear(k.Sym[:])
	rc, err := OpenBlob(l, d)
	if err != nil {
		return d, nil, false, err
	}
	rc = s.counted(rc, d)
	f, err := s.tempFile()
	if err != nil {
		rc.Close()
		return d, nil, false, err
	}
	var lopts []layercrypt.Option
	if !s.o.trustSrc {
		lopts = append(lopts, layercrypt.WithPlainDigest())
	}
	sealed, err := layercrypt.Encrypt(ctx, f, rc, k, lopts...)
	rc.Close()
	if err != nil {
		return d, nil, false, err
	}
	if got := hex.EncodeToString(sealed.PlainDigest[:]); !s.o.trustSrc && got != d.Digest.Hex {
		return d, nil, false, fmt.Errorf("source blob does not match its descriptor (got sha256:%s, %d bytes): %w", got, sealed.Size, spec.ErrIntegrity)
	}
	p := spec.PrivateOptions{
		SymKey:        k.Sym[:],
		Digest:        d.Digest.String(),
		CipherOptions: map[string][]byte{"nonce": k.Nonce[:]},
	}
	nd := v1.Descriptor{
		MediaType:    types.MediaType(emt),
		Size:         sealed.Size,
		Digest:       v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sealed.Digest[:])},
		URLs:         d.URLs,
		ArtifactType: d.ArtifactType,
		Annotations:  maps.Clone(d.Annotations),
	}
	if nd.Annotations == nil {
		nd.Annotations = map[string]string{}
	}
	nd.Annotations[spec.AnnotationPubOpts] = spec.EncodePublic(spec.PublicOptions{Cipher: spec.CipherAES256CTR, HMAC: sealed.HMAC[:]})
	if nd, err = addRecipients(ctx, nd, p, wrappers); err != nil {
		return d, nil, false, err
	}
	return nd, &fileLayer{f: f, digest: nd.Digest, diffID: diffID, size: nd.Size, mt: nd.MediaType}, true, nil
}

func (s *session) decryptLayer(ctx context.Context, d v1.Descriptor, l v1.Layer, diffID v1.Hash) (v1.Descriptor, v1.Layer, bool, error) {
	pub, err := spec.DecodePublic(d.Annotations[spec.AnnotationPubOpts])
	if err != nil {
		return d, nil, false, err
	}
	p, err := s.unwrap(ctx, d)
	if err != nil {
		return d, nil, false, err
	}
	k, err := layercrypt.KeyFromOptions(p)
	clear(p.SymKey)
	if err != nil {
		return d, nil, false, err
	}
	defer clear(k.Sym[:])
	mt, err := spec.DecryptedMediaType(string(d.MediaType))
	if err != nil {
		return d, nil, false, err
	}
	rc, err := s.openCiphertext(ctx, l, d)
	if err != nil {
		return d, nil, false, err
	}
	rc = s.counted(rc, d)
	f, err := s.tempFile()
	if err != nil {
		rc.Close()
		return d, nil, false, err
	}
	opened, err := layercrypt.Decrypt(ctx, f, rc, k, pub.HMAC)
	rc.Close()
	if err != nil {
		return d, nil, false, err
	}
	staged := func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(f, 0, opened.Size)), nil }
	if _, err := VerifyPlainDigest(ctx, mt, p.Digest, opened.Digest, diffID, staged); err != nil {
		return d, nil, false, err
	}
	nd := v1.Descriptor{
		MediaType:    types.MediaType(mt),
		Size:         opened.Size,
		Digest:       v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(opened.Digest[:])},
		URLs:         d.URLs,
		ArtifactType: d.ArtifactType,
		Annotations:  plainAnnotations(d.Annotations),
	}
	return nd, &fileLayer{f: f, digest: nd.Digest, diffID: diffID, size: nd.Size, mt: nd.MediaType}, true, nil
}

// openCiphertext opens an encrypted layer's blob for Decrypt, which
// authenticates it with the HMAC: through the unverified reader when one was
// given (one SHA-256 pass instead of two), else through l. The declared size
// is enforced either way.
func (s *session) openCiphertext(ctx context.Context, l v1.Layer, d v1.Descriptor) (io.ReadCloser, error) {
	if s.o.rawBlobs == nil {
		return OpenBlob(l, d)
	}
	if d.Size < 0 {
		return nil, fmt.Errorf("descriptor declares a negative size (%d): %w", d.Size, spec.ErrIntegrity)
	}
	rc, err := s.o.rawBlobs(ctx, d.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading blob: %w", err)
	}
	return &sizedReader{rc: rc, size: d.Size}, nil
}

// OpenBlob opens the blob of l, which descriptor d describes. d.Size is
// only a claim (a manifest may say 40 GiB for a blob of 127 bytes): nothing
// is reserved or allocated from it, and the reader enforces it, failing with
// spec.ErrIntegrity as soon as a byte beyond d.Size arrives (it never asks
// the source for more than d.Size+1 bytes) or when the blob ends short.
func OpenBlob(l v1.Layer, d v1.Descriptor) (io.ReadCloser, error) {
	if d.Size < 0 {
		return nil, fmt.Errorf("descriptor declares a negative size (%d): %w", d.Size, spec.ErrIntegrity)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("reading blob: %w", err)
	}
	return &sizedReader{rc: rc, size: d.Size}, nil
}

// sizedReader reads a blob that must hold exactly size bytes.
type sizedReader struct {
	rc   io.ReadCloser
	size int64 // declared
	n    int64 // read so far, at most size+1
	err  error // sticky size error
}

func (r *sizedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if rem := r.size - r.n; int64(len(p)) > rem {
		p = p[:rem+1] // one byte more than declared is enough to tell
	}
	n, err := r.rc.Read(p)
	r.n += int64(n)
	switch {
	case r.n > r.size:
		r.err = fmt.Errorf("blob is longer than the %d bytes its descriptor declares: %w", r.size, spec.ErrIntegrity)
		return n - int(r.n-r.size), r.err
	case err == io.EOF && r.n < r.size:
		r.err = fmt.Errorf("blob ended after %d bytes, its descriptor declares %d: %w", r.n, r.size, spec.ErrIntegrity)
		return n, r.err
	}
	return n, err
}

func (r *sizedReader) Close() error { return r.rc.Close() }

// plainAnnotations drops the encryption annotations; nil when none remain.
func plainAnnotations(a map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		if k == spec.AnnotationPubOpts || strings.HasPrefix(k, spec.AnnotationKeyPrefix) {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// rewrap opens an encrypted layer's options with the session's keys and
// wraps them for wrappers, after dropping every existing recipient when
// replace is set. The blob is untouched.
func (s *session) rewrap(ctx context.Context, d v1.Descriptor, wrappers []keywrap.Wrapper, replace bool) (v1.Descriptor, error) {
	p, err := s.unwrap(ctx, d)
	if err != nil {
		return d, err
	}
	defer clear(p.SymKey)
	if replace {
		d.Annotations = maps.Clone(d.Annotations)
		maps.DeleteFunc(d.Annotations, func(k, _ string) bool { return strings.HasPrefix(k, spec.AnnotationKeyPrefix) })
	}
	return addRecipients(ctx, d, p, wrappers)
}

// addRecipients wraps p for every wrapper and appends the entries.
func addRecipients(ctx context.Context, d v1.Descriptor, p spec.PrivateOptions, wrappers []keywrap.Wrapper) (v1.Descriptor, error) {
	opts := spec.MarshalPrivate(p)
	defer clear(opts)
	d.Annotations = maps.Clone(d.Annotations)
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	for _, w := range wrappers {
		entry, err := w.Wrap(ctx, opts)
		if err != nil {
			return d, fmt.Errorf("wrapping layer key for %s recipients: %w", w.Scheme(), err)
		}
		k := spec.AnnotationKeyPrefix + w.Scheme()
		d.Annotations[k] = spec.AppendKeyEntry(d.Annotations[k], entry)
	}
	return d, nil
}

// unwrap recovers the private options of an encrypted layer with the
// session's keys.
func (s *session) unwrap(ctx context.Context, d v1.Descriptor) (spec.PrivateOptions, error) {
	return Unwrap(ctx, d, s.o.unwrappers)
}

// Unwrap recovers the private options of the encrypted layer d describes,
// trying unwrappers in order on every wrapped key of a matching scheme. It
// fails with an error matching spec.ErrNoKey (and every cause a key
// provider or broker gave, for errors.Is), on one line naming the schemes
// the layer's recipients use.
func Unwrap(ctx context.Context, d v1.Descriptor, unwrappers []keywrap.Unwrapper) (spec.PrivateOptions, error) {
	entries, err := spec.KeyAnnotations(d.Annotations)
	if err != nil {
		return spec.PrivateOptions{}, err
	}
	var errs []error
	for _, u := range unwrappers {
		for _, e := range entries[u.Scheme()] {
			b, err := u.Unwrap(ctx, e)
			if err == nil {
				p, perr := spec.UnmarshalPrivate(b)
				clear(b)
				if perr == nil {
					return p, nil
				}
				err = perr
			}
			// A local key that is simply not a recipient says nothing worth
			// reporting; a key provider's failure (broker denial, broker
			// unreachable, wrong KEK) is the cause the user needs.
			if !errors.Is(err, spec.ErrNoKey) || strings.HasPrefix(u.Scheme(), "provider.") {
				errs = append(errs, err)
			}
		}
	}
	schemes := slices.Sorted(maps.Keys(entries))
	if len(schemes) == 0 {
		return spec.PrivateOptions{}, fmt.Errorf("layer has no wrapped keys: %w", spec.ErrNoKey)
	}
	msg := fmt.Sprintf("none of the given keys opens this layer (its recipients use %s)", strings.Join(schemes, ", "))
	if len(errs) == 0 {
		return spec.PrivateOptions{}, fmt.Errorf("%s: %w", msg, spec.ErrNoKey)
	}
	// Keep every cause, on one line, and keep them matchable with errors.Is
	// (a broker's policy denial must still map to its own exit code).
	return spec.PrivateOptions{}, &unwrapError{msg: msg, causes: errs}
}

// unwrapError reports why no unwrapper opened a layer: one line, every cause
// kept for errors.Is, and always matching spec.ErrNoKey.
type unwrapError struct {
	msg    string
	causes []error
}

func (e *unwrapError) Error() string {
	parts := make([]string, len(e.causes))
	for i, c := range e.causes {
		parts[i] = strings.ReplaceAll(c.Error(), "\n", "; ")
	}
	return e.msg + ": " + strings.Join(parts, "; ")
}

func (e *unwrapError) Unwrap() []error { return append([]error{spec.ErrNoKey}, e.causes...) }
