// Package ctddecoder is coffer's containerd stream processor, a drop-in for
// imgcrypt's ctd-decoder: containerd pipes an encrypted layer to it and
// unpacks what it writes back. Unlike the reference it emits nothing that is
// not authenticated: the ciphertext is spooled to an unlinked temp file while
// it is hashed; the HMAC and the digest inside the wrapped options are
// checked; only then is the plaintext decrypted again from the spool and
// written out. Memory stays bounded (a few MiB) whatever the layer size.
//
// Keys come from the payload containerd passes on fd 3 (ctr-enc, CRI's node
// key model), from a node key directory, and from the key providers of an
// ocicrypt keyprovider config. When containerd sends no payload (plain
// `ctr images import|pull`), the layer's descriptor is found in containerd's
// content store by the digest of what arrived on stdin.
package ctddecoder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/ctxio"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/layercrypt"
	"github.com/coffer-dev/coffer/runtime/tenant"
	"github.com/coffer-dev/coffer/spec"
)

// MediaTypeEnv is the environment variable in which containerd names the
// media type of the stream it pipes to a processor.
const MediaTypeEnv = "STREAM_PROCESSOR_MEDIATYPE"

// Result describes a decoded layer.
type Result struct {
	// Size is the number of plaintext bytes written.
	Size int64
	// Match says what the wrapped digest named (see imagecrypt.DigestMatch).
	Match imagecrypt.DigestMatch
	// Descriptor says where the layer's descriptor came from: "payload" or
	// "content store".
	Descriptor string
	// Namespace is the containerd namespace whose keys were used (with
	// per-namespace keys).
	Namespace string
	// ImageRef is the image reference whose keys were used (with per-image
	// keys).
	ImageRef string
	// Spooled says the ciphertext was written to a temp file; false when
	// containerd's stored copy of the blob served instead.
	Spooled bool
}

// Decode reads an encrypted layer from src and writes the decrypted layer
// (still compressed as it was) to dst. Nothing is written to dst before the
// whole layer has been read and authenticated; on any error dst has received
// nothing. Errors wrap spec sentinels: ErrNoKey (no key opens the layer),
// ErrIntegrity (HMAC, digest or payload mismatch), ErrUnsupported.
func Decode(ctx context.Context, dst io.Writer, src io.Reader, opts ...Option) (Result, error) {
	var o options
	for _, f := range opts {
		if err := f(&o); err != nil {
			return Result{}, err
		}
	}
	if !spec.IsEncrypted(o.mediaType) {
		return Result{}, fmt.Errorf("input media type %q (%s) is not an encrypted OCI layer type: %w", printable(o.mediaType), MediaTypeEnv, spec.ErrUnsupported)
	}
	plainMT, _ := spec.DecryptedMediaType(o.mediaType)
	payload, err := ParsePayload(o.payload)
	if err != nil {
		return Result{}, err
	}
	if (o.perNamespace || o.perImage) && (o.containerdRoot == "" || o.address == "") {
		return Result{}, errors.New("per-namespace and per-image keys need containerd's root directory and socket (--containerd-root, --containerd-address)")
	}
	d := decoder{o: &o, payload: payload, plainMT: plainMT}
	defer d.close()
	if !o.perNamespace && !o.perImage {
		// Fail before reading the layer when no key can exist.
		if err := d.keys(ctx, v1.Hash{}); err != nil {
			return Result{}, err
		}
	}
	return d.run(ctx, dst, src, payload)
}

type decoder struct {
	o         *options
	payload   *Payload
	unw       []keywrap.Unwrapper
	skipped   []string
	plainMT   string
	spool     *os.File // holds the ciphertext: our temp file or the stored blob
	spooled   bool     // spool is our temp file
	namespace string
	imageRef  string
}

// keys sets d.unw: every shared key source and, with per-namespace keys,
// those of the namespace extracting the layer with digest dg.
func (d *decoder) keys(ctx context.Context, dg v1.Hash) error {
	if d.unw != nil {
		return nil
	}
	var nsDirs []string
	if d.o.perNamespace || d.o.perImage {
		ex, err := d.requester(ctx, dg)
		if err != nil {
			return err
		}
		if d.o.perNamespace {
			d.namespace = ex.Namespace
			for _, k := range d.o.keyDirs {
				nsDirs = append(nsDirs, filepath.Join(k, ex.Namespace))
			}
		}
		if d.o.perImage {
			d.imageRef = ex.ImageRef
			prefixes, err := refPrefixes(ex.ImageRef)
			if err != nil {
				return err
			}
			for _, k := range d.o.keyDirs {
				for _, p := range prefixes {
					nsDirs = append(nsDirs, filepath.Join(k, ByImageDir, p))
				}
			}
		}
	}
	unw, skipped, err := d.o.unwrappers(d.payload, nsDirs...)
	if err != nil {
		return err
	}
	if len(unw) == 0 {
		return fmt.Errorf("%w%s: %w", errNoKeySource, skippedNote(skipped), spec.ErrNoKey)
	}
	d.unw, d.skipped = unw, skipped
	return nil
}

// requester is the one extraction of layer dg now: its namespace and, with
// per-image keys, the image reference it is pulled for.
func (d *decoder) requester(ctx context.Context, dg v1.Hash) (tenant.Extraction, error) {
	what := "per-namespace keys"
	if d.o.perImage {
		what = "per-image keys"
	}
	cands, err := lookupLayer(ctx, d.o.containerdRoot, dg)
	if err != nil {
		return tenant.Extraction{}, err
	}
	var chains []string
	for _, c := range cands {
		if c.chainID != "" {
			chains = append(chains, c.chainID)
		}
	}
	if len(chains) == 0 {
		return tenant.Extraction{}, fmt.Errorf("%s: no image config in containerd's content store gives layer %s a chain ID: %w", what, dg, spec.ErrNotFound)
	}
	all, err := tenant.Extractions(ctx, d.o.address, d.o.snapshotters)
	if err != nil {
		return tenant.Extraction{}, fmt.Errorf("%s: %w", what, err)
	}
	var (
		ex    []tenant.Extraction
		names []string
	)
	for _, e := range all {
		if !slices.Contains(chains, e.ChainID) {
			continue
		}
		e.ChainID = ""
		if !d.o.perNamespace {
			e.Namespace = ""
		}
		if !d.o.perImage {
			e.ImageRef = ""
		}
		if !slices.Contains(ex, e) {
			ex = append(ex, e)
			names = append(names, strings.Trim(e.Namespace+" "+printable(e.ImageRef), " "))
		}
	}
	switch {
	case len(ex) == 0:
		return tenant.Extraction{}, fmt.Errorf("%s: nothing is extracting layer %s in containerd: %w", what, dg, spec.ErrPolicyDenied)
	case len(ex) > 1:
		slices.Sort(names)
		return tenant.Extraction{}, fmt.Errorf("%s: %s are extracting layer %s at the same time and their keys must not be mixed: retry: %w", what, strings.Join(names, ", "), dg, spec.ErrPolicyDenied)
	case d.o.perNamespace && d.o.perImage && ex[0].Namespace == ByImageDir:
		return tenant.Extraction{}, fmt.Errorf("per-namespace keys: namespace %q is also the per-image key directory: use another namespace: %w", ByImageDir, spec.ErrPolicyDenied)
	case d.o.perImage && ex[0].ImageRef == "":
		return tenant.Extraction{}, fmt.Errorf("per-image keys: the extraction of layer %s names no image reference (only containerd's CRI plugin with disable_snapshot_annotations = false sets %s; `coffer runtime install containerd --cri --per-image-keys` does): %w", dg, tenant.CRIImageRefLabel, spec.ErrPolicyDenied)
	}
	return ex[0], nil
}

// ByImageDir is the subdirectory of a keys path holding per-image keys
// (WithPerImageKeys).
const ByImageDir = "by-image"

// refPrefixes returns the key subdirectories of an image reference, most
// specific first: registry/a/b, registry/a, registry. The reference must be
// a valid one (the label comes from containerd, but is checked: it becomes
// a path).
func refPrefixes(ref string) ([]string, error) {
	bad := fmt.Errorf("per-image keys: image reference %q is not valid: %w", printable(ref), spec.ErrPolicyDenied)
	if _, err := name.ParseReference(ref, name.StrictValidation); err != nil {
		return nil, bad
	}
	repo := ref
	if i := strings.IndexByte(repo, '@'); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo = repo[:i]
	}
	parts := strings.Split(repo, "/")
	if len(parts) < 2 {
		return nil, bad
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, bad
		}
	}
	var out []string
	for i := len(parts); i >= 1; i-- {
		out = append(out, filepath.Join(parts[:i]...))
	}
	return out, nil
}

func (d *decoder) close() {
	if d.spool != nil {
		d.spool.Close()
	}
}

func (d *decoder) run(ctx context.Context, dst io.Writer, src io.Reader, payload *Payload) (Result, error) {
	var (
		res Result
		v   opened
		err error
	)
	defer func() { v.clear() }()
	// Know the descriptor before reading, if we can: from the payload, or
	// from the one layer containerd is extracting right now. Then spooling
	// and authentication are one pass.
	var known *found
	switch {
	case payload != nil && payload.Descriptor != nil && hasKeys(payload.Descriptor):
		known, res.Descriptor = &found{desc: *payload.Descriptor}, "payload"
	default:
		if f, ok := d.predict(ctx); ok {
			known, res.Descriptor = &f, "content store"
		}
	}
	if known != nil {
		v, err = d.openStreaming(ctx, src, *known)
		if errors.Is(err, errNotStoreBlob) || (err != nil && res.Descriptor == "content store" && errors.Is(err, errSpooledMismatch)) {
			// A wrong guess (or a tampered layer): start over from the
			// spool, by digest.
			v.clear()
			v, err = d.openSpooled(ctx, nil)
		}
	} else {
		res.Descriptor = "content store"
		spool, serr := d.newSpool()
		if serr != nil {
			return Result{}, serr
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(spool, h), ctxio.Reader(ctx, src)); err != nil {
			return Result{}, fmt.Errorf("reading the layer from stdin: %w", err)
		}
		v, err = d.openSpooled(ctx, h.Sum(nil))
	}
	if err != nil {
		return Result{}, err
	}
	// The HMAC holds. Now the digest inside the wrapped options.
	diffID := v.used.diffID
	if want := v.p.Digest; diffID == (v1.Hash{}) && d.o.containerdRoot != "" && want != "sha256:"+hex.EncodeToString(v.opened.Digest[:]) {
		// Only some writers need the config's diffID: look it up.
		if cands, err := lookupLayer(ctx, d.o.containerdRoot, d.spoolDigest(ctx)); err == nil && len(cands) > 0 {
			diffID = cands[0].diffID
		}
	}
	match, err := imagecrypt.VerifyPlainDigest(ctx, d.plainMT, v.p.Digest, v.opened.Digest, diffID, func() (io.ReadCloser, error) {
		return io.NopCloser(d.plain(v.k)), nil
	})
	if err != nil {
		return Result{}, err
	}
	res.Match = match
	// Authenticated: emit.
	n, err := io.CopyBuffer(dst, ctxio.Reader(ctx, d.plain(v.k)), make([]byte, 1<<20))
	if err != nil {
		return Result{}, fmt.Errorf("writing the decrypted layer: %w", err)
	}
	if n != v.opened.Size {
		return Result{}, fmt.Errorf("spooled layer changed size (%d, was %d): %w", n, v.opened.Size, spec.ErrIntegrity)
	}
	res.Size = n
	res.Namespace = d.namespace
	res.ImageRef = d.imageRef
	res.Spooled = d.spooled
	return res, nil
}

// section reads the spool from its start.
func (d *decoder) section() io.Reader { return io.NewSectionReader(d.spool, 0, 1<<62) }

// plain decrypts the spool from its start (authenticated by then).
func (d *decoder) plain(k layercrypt.Key) io.Reader { return layercrypt.PlaintextOf(d.section(), k) }

func hasKeys(d *v1.Descriptor) bool {
	for a := range d.Annotations {
		if strings.HasPrefix(a, spec.AnnotationKeyPrefix) {
			return true
		}
	}
	return false
}

func (d *decoder) unwrap(ctx context.Context, cands []found) (spec.PrivateOptions, error) {
	p, _, err := d.unwrapFound(ctx, cands)
	return p, err
}

// unwrapFound tries every key on every candidate descriptor
// (imagecrypt.Unwrap on each, in order).
func (d *decoder) unwrapFound(ctx context.Context, cands []found) (spec.PrivateOptions, found, error) {
	var errs []error
	for _, c := range cands {
		p, err := imagecrypt.Unwrap(ctx, c.desc, d.unw)
		if err == nil {
			return p, c, nil
		}
		errs = append(errs, err)
	}
	msg := "no key available to the decoder opens this layer" + skippedNote(d.skipped)
	if len(errs) == 0 {
		return spec.PrivateOptions{}, found{}, fmt.Errorf("%s: no descriptor of it was found: %w", msg, spec.ErrNoKey)
	}
	return spec.PrivateOptions{}, found{}, &oneLineError{msg: msg, causes: errs}
}

// oneLineError keeps every candidate's cause on one line (containerd shows
// the decoder's stderr as the pull's error) and matchable with errors.Is.
type oneLineError struct {
	msg    string
	causes []error
}

func (e *oneLineError) Error() string {
	parts := make([]string, len(e.causes))
	for i, c := range e.causes {
		parts[i] = strings.ReplaceAll(c.Error(), "\n", "; ")
	}
	return e.msg + ": " + strings.Join(parts, "; ")
}

func (e *oneLineError) Unwrap() []error { return append([]error{spec.ErrNoKey}, e.causes...) }

func skippedNote(skipped []string) string {
	if len(skipped) == 0 {
		return ""
	}
	return fmt.Sprintf(" (skipped %d unusable key file(s): %s)", len(skipped), strings.Join(skipped, "; "))
}
