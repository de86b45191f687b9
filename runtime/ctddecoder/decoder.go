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
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/layercrypt"
	"github.com/coffer-dev/coffer/runtime/tenant"
	"github.com/coffer-dev/coffer/spec"
)

// MediaTypeEnv is the environment variable in which containerd names the
// media type of the stream it pipes to a processor.
const MediaTypeEnv = "STREAM_PROCESSOR_MEDIATYPE"

// Option configures Decode.
type Option func(*options) error

type options struct {
	mediaType      string
	payload        []byte
	keyDirs        []string
	providerConfig string
	containerdRoot string
	tempDir        string
	extra          []keywrap.Unwrapper
	perNamespace   bool
	address        string
	snapshotters   []string
}

// WithMediaType is the media type of the input (containerd's
// STREAM_PROCESSOR_MEDIATYPE); required, must be an encrypted layer type.
func WithMediaType(mt string) Option { return func(o *options) error { o.mediaType = mt; return nil } }

// WithPayload is the raw fd-3 payload (nil or empty: none).
func WithPayload(b []byte) Option { return func(o *options) error { o.payload = b; return nil } }

// WithPayloadFile reads the payload from f (containerd's fd 3) when f is a
// readable pipe (containerd's) or a readable regular file outside /proc and
// /sys (a test's).
// Anything else means no payload: when containerd sends none, fd 3 is free
// at exec and the Go runtime itself takes it (Go 1.25+ keeps the cgroup CPU
// quota file open there), so reading it blindly would parse that file.
func WithPayloadFile(f *os.File) Option {
	return func(o *options) error {
		if f == nil {
			return nil
		}
		st, err := f.Stat()
		if err != nil {
			return nil
		}
		// Not readable (a wrapper such as GNU time may hold its output
		// file there): not a payload.
		if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_ACCMODE == unix.O_WRONLY {
			return nil
		}
		if st.Mode()&os.ModeNamedPipe == 0 {
			if !st.Mode().IsRegular() {
				return nil
			}
			p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
			if err != nil || strings.HasPrefix(p, "/sys/") || strings.HasPrefix(p, "/proc/") {
				return nil
			}
		}
		b, err := io.ReadAll(io.LimitReader(f, MaxPayload+1))
		if err != nil {
			return fmt.Errorf("reading the payload on fd 3: %w", err)
		}
		o.payload = b
		return nil
	}
}

// WithKeysPath adds a node key directory: every private key file directly
// in it, in lexical order (--decryption-keys-path). Repeatable.
func WithKeysPath(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("empty decryption keys path")
		}
		o.keyDirs = append(o.keyDirs, dir)
		return nil
	}
}

// WithKeyProviderConfig is the ocicrypt keyprovider config file
// (OCICRYPT_KEYPROVIDER_CONFIG); every provider in it is asked for entries
// of its own scheme only. Default none.
func WithKeyProviderConfig(path string) Option {
	return func(o *options) error { o.providerConfig = path; return nil }
}

// WithContainerdRoot is containerd's root directory, where a layer's
// descriptor is looked up when no payload names it. Default none (then a
// payload with the descriptor is required).
func WithContainerdRoot(dir string) Option {
	return func(o *options) error { o.containerdRoot = dir; return nil }
}

// WithContainerdAddress is containerd's socket. The decoder asks it which
// layers are being extracted (their active snapshots in the given
// snapshotters, default overlayfs and native): with no payload, the layer's
// descriptor is then known before the layer is read, and spooling and
// authenticating take one pass instead of two. Per-namespace keys need it.
// A socket that does not exist is ignored.
func WithContainerdAddress(address string, snapshotters ...string) Option {
	return func(o *options) error {
		o.address = address
		o.snapshotters = snapshotters
		if len(o.snapshotters) == 0 {
			o.snapshotters = []string{"overlayfs", "native"}
		}
		return nil
	}
}

// WithPerNamespaceKeys turns on per-tenant keys: the decoder asks
// containerd (WithContainerdAddress) which namespace is extracting the
// layer (see package tenant) and adds the keys in <keys path>/<namespace>/
// of every WithKeysPath directory; files directly in a keys path stay
// shared by every namespace. A layer no namespace (or several at once) is
// extracting fails with spec.ErrPolicyDenied. Needs WithContainerdRoot, to
// learn the layer's chain ID.
func WithPerNamespaceKeys() Option {
	return func(o *options) error { o.perNamespace = true; return nil }
}

// WithTempDir is where the ciphertext is spooled (an unlinked file: nothing
// is left behind, even on a crash). Default os.TempDir().
func WithTempDir(dir string) Option { return func(o *options) error { o.tempDir = dir; return nil } }

// WithUnwrappers adds unwrappers (tried after the other key sources).
func WithUnwrappers(u ...keywrap.Unwrapper) Option {
	return func(o *options) error { o.extra = append(o.extra, u...); return nil }
}

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
	if o.perNamespace && (o.containerdRoot == "" || o.address == "") {
		return Result{}, errors.New("per-namespace keys need containerd's root directory and socket (--containerd-root, --containerd-address)")
	}
	d := decoder{o: &o, payload: payload, plainMT: plainMT}
	defer d.close()
	if !o.perNamespace {
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
}

// keys sets d.unw: every shared key source and, with per-namespace keys,
// those of the namespace extracting the layer with digest dg.
func (d *decoder) keys(ctx context.Context, dg v1.Hash) error {
	if d.unw != nil {
		return nil
	}
	var nsDirs []string
	if d.o.perNamespace {
		ns, err := d.requester(ctx, dg)
		if err != nil {
			return err
		}
		d.namespace = ns
		for _, k := range d.o.keyDirs {
			nsDirs = append(nsDirs, filepath.Join(k, ns))
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

// requester is the one containerd namespace extracting layer dg now.
func (d *decoder) requester(ctx context.Context, dg v1.Hash) (string, error) {
	cands, err := lookupLayer(ctx, d.o.containerdRoot, dg)
	if err != nil {
		return "", err
	}
	var chains []string
	for _, c := range cands {
		if c.chainID != "" {
			chains = append(chains, c.chainID)
		}
	}
	if len(chains) == 0 {
		return "", fmt.Errorf("per-namespace keys: no image config in containerd's content store gives layer %s a chain ID: %w", dg, spec.ErrNotFound)
	}
	nss, err := tenant.Requesters(ctx, d.o.address, d.o.snapshotters, chains)
	if err != nil {
		return "", fmt.Errorf("per-namespace keys: %w", err)
	}
	switch len(nss) {
	case 0:
		return "", fmt.Errorf("per-namespace keys: no containerd namespace is extracting layer %s: %w", dg, spec.ErrPolicyDenied)
	case 1:
		return nss[0], nil
	}
	return "", fmt.Errorf("per-namespace keys: namespaces %s are extracting layer %s at the same time and their keys must not be mixed: retry: %w", strings.Join(nss, ", "), dg, spec.ErrPolicyDenied)
}

func (d *decoder) close() {
	if d.spool != nil {
		d.spool.Close()
	}
}

// newSpool makes d.spool an unlinked temp file: only this process can reach
// the bytes, and a crash leaves nothing behind.
func (d *decoder) newSpool() (*os.File, error) {
	spool, err := os.CreateTemp(d.o.tempDir, ".coffer-ctd-decoder-")
	if err != nil {
		return nil, fmt.Errorf("spooling the layer: %w", err)
	}
	os.Remove(spool.Name())
	if d.spool != nil {
		d.spool.Close()
	}
	d.spool, d.spooled = spool, true
	return spool, nil
}

// storeBlob opens the blob of desc in containerd's content store, if it is
// there with the descriptor's size: containerd pipes us exactly that file
// (an import or pull stores a layer before unpacking it), so it can serve as
// the spool, and nothing need be written.
func (d *decoder) storeBlob(desc v1.Descriptor) *os.File {
	if d.o.containerdRoot == "" || desc.Digest.Algorithm != "sha256" || len(desc.Digest.Hex) != 64 || desc.Size <= 0 {
		return nil
	}
	if _, err := hex.DecodeString(desc.Digest.Hex); err != nil {
		return nil // never a path
	}
	f, err := os.Open(filepath.Join(d.o.containerdRoot, "io.containerd.content.v1.content", "blobs", "sha256", desc.Digest.Hex))
	if err != nil {
		return nil
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Size() != desc.Size {
		f.Close()
		return nil
	}
	return f
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
		if _, err := io.Copy(io.MultiWriter(spool, h), ctxReader{ctx, src}); err != nil {
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
	n, err := io.CopyBuffer(dst, ctxReader{ctx, d.plain(v.k)}, make([]byte, 1<<20))
	if err != nil {
		return Result{}, fmt.Errorf("writing the decrypted layer: %w", err)
	}
	if n != v.opened.Size {
		return Result{}, fmt.Errorf("spooled layer changed size (%d, was %d): %w", n, v.opened.Size, spec.ErrIntegrity)
	}
	res.Size = n
	res.Namespace = d.namespace
	res.Spooled = d.spooled
	return res, nil
}

// opened is an authenticated layer: its options, key, the plaintext's size
// and digest, and the descriptor it was opened with.
type opened struct {
	p      spec.PrivateOptions
	k      layercrypt.Key
	opened layercrypt.Opened
	used   found
}

func (v *opened) clear() { clear(v.k.Sym[:]); clear(v.p.SymKey) }

// errSpooledMismatch marks an HMAC failure after the whole layer was
// spooled (so it can be retried from the spool).
var errSpooledMismatch = errors.New("layer does not match the descriptor it was opened with")

// errNotStoreBlob: stdin differed from the content store's blob; the
// layer has been spooled and must be opened by its digest.
var errNotStoreBlob = errors.New("the layer on stdin is not the content store's blob")

// openStreaming unwraps the key of a known descriptor, then authenticates
// stdin (HMAC, plaintext digest) as it arrives. The bytes are kept for the
// second pass in the content store's own copy of the blob when it is there
// (stdin is compared with it as it arrives), else in the spool.
func (d *decoder) openStreaming(ctx context.Context, src io.Reader, f found) (opened, error) {
	var v opened
	if err := d.keys(ctx, f.desc.Digest); err != nil {
		return v, err
	}
	p, err := d.unwrap(ctx, []found{f})
	if err != nil {
		return v, err
	}
	v.p, v.used = p, f
	if v.k, err = layercrypt.KeyFromOptions(p); err != nil {
		return v, err
	}
	pub, err := spec.DecodePublic(f.desc.Annotations[spec.AnnotationPubOpts])
	if err != nil {
		return v, err
	}
	if blob := d.storeBlob(f.desc); blob != nil {
		same := &sameAs{r: src, f: blob, size: f.desc.Size}
		v.opened, err = layercrypt.Decrypt(ctx, io.Discard, same, v.k, pub.HMAC)
		if errors.Is(err, errDiffers) {
			// Not the stored blob after all: spool what was read (equal
			// to the blob up to same.off), the differing chunk and the rest.
			blob.Close()
			spool, serr := d.newSpool()
			if serr != nil {
				return v, serr
			}
			if _, serr = io.Copy(spool, io.NewSectionReader(blob, 0, same.off)); serr == nil {
				if _, serr = spool.Write(same.pending); serr == nil {
					_, serr = io.Copy(spool, ctxReader{ctx, src})
				}
			}
			if serr != nil {
				return v, fmt.Errorf("spooling the layer: %w", serr)
			}
			return v, errNotStoreBlob
		}
		if d.spool != nil {
			d.spool.Close()
		}
		d.spool, d.spooled = blob, false
	} else {
		spool, serr := d.newSpool()
		if serr != nil {
			return v, serr
		}
		v.opened, err = layercrypt.Decrypt(ctx, io.Discard, io.TeeReader(src, spool), v.k, pub.HMAC)
	}
	if errors.Is(err, spec.ErrIntegrity) {
		return v, fmt.Errorf("%w: %w", errSpooledMismatch, err)
	}
	return v, err
}

// errDiffers: stdin is not byte for byte the stored blob.
var errDiffers = errors.New("stdin differs from the stored blob")

// sameAs passes r through, failing with errDiffers as soon as it differs
// from the first size bytes of f (or is longer or shorter). On failure,
// pending holds the chunk read from r that was not passed on.
type sameAs struct {
	r       io.Reader
	f       *os.File
	size    int64
	off     int64
	buf     []byte
	pending []byte
}

func (s *sameAs) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		if cap(s.buf) < n {
			s.buf = make([]byte, n)
		}
		m, _ := s.f.ReadAt(s.buf[:n], s.off)
		if m != n || !bytes.Equal(s.buf[:n], p[:n]) {
			s.pending = bytes.Clone(p[:n])
			return 0, errDiffers
		}
		s.off += int64(n)
	}
	if err == io.EOF && s.off != s.size {
		return n, errDiffers
	}
	return n, err
}

// openSpooled finds the descriptor of the spooled layer by its digest (sum,
// or hashed from the spool when nil) in containerd's content store, then
// authenticates the spool.
func (d *decoder) openSpooled(ctx context.Context, sum []byte) (opened, error) {
	var v opened
	if d.o.containerdRoot == "" {
		return v, fmt.Errorf("containerd sent no payload naming the layer and no --containerd-root is given to look it up: %w", spec.ErrNotFound)
	}
	dg := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum)}
	if sum == nil {
		dg = d.spoolDigest(ctx)
	}
	cands, err := lookupLayer(ctx, d.o.containerdRoot, dg)
	if err != nil {
		return v, err
	}
	if len(cands) == 0 {
		return v, fmt.Errorf("no manifest in containerd's content store (%s) names layer %s, and containerd sent no payload: %w", d.o.containerdRoot, dg, spec.ErrNotFound)
	}
	if err := d.keys(ctx, dg); err != nil {
		return v, err
	}
	if v.p, v.used, err = d.unwrapFound(ctx, cands); err != nil {
		return v, err
	}
	if v.k, err = layercrypt.KeyFromOptions(v.p); err != nil {
		return v, err
	}
	pub, err := spec.DecodePublic(v.used.desc.Annotations[spec.AnnotationPubOpts])
	if err != nil {
		return v, err
	}
	v.opened, err = layercrypt.Decrypt(ctx, io.Discard, d.section(), v.k, pub.HMAC)
	return v, err
}

// spoolDigest hashes the spool (zero Hash on a read error).
func (d *decoder) spoolDigest(ctx context.Context) v1.Hash {
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, d.section()}); err != nil {
		return v1.Hash{}
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// predict finds the descriptor of the layer containerd is extracting now
// (its active extract-<id> <chainID> snapshots, matched through the image
// configs in the content store), when exactly one layer of our media type
// fits. A wrong guess costs a second pass over the spool, never a wrong
// answer: the HMAC decides.
func (d *decoder) predict(ctx context.Context) (found, bool) {
	if d.o.address == "" || d.o.containerdRoot == "" {
		return found{}, false
	}
	if _, err := os.Stat(d.o.address); err != nil {
		return found{}, false
	}
	ex, err := tenant.Extractions(ctx, d.o.address, d.o.snapshotters)
	if err != nil || len(ex) == 0 {
		return found{}, false
	}
	var chains []string
	for _, e := range ex {
		chains = append(chains, e.ChainID)
	}
	cands, err := layersByChain(ctx, d.o.containerdRoot, d.o.mediaType, chains)
	if err != nil || len(cands) == 0 {
		return found{}, false
	}
	for _, c := range cands[1:] {
		if c.desc.Digest != cands[0].desc.Digest {
			return found{}, false
		}
	}
	if !hasKeys(&cands[0].desc) {
		return found{}, false
	}
	return cands[0], true
}

// section reads the spool from its start.
func (d *decoder) section() io.Reader { return io.NewSectionReader(d.spool, 0, 1<<62) }

// plain decrypts the spool from its start (AES-256-CTR, the nonce as IV).
func (d *decoder) plain(k layercrypt.Key) io.Reader {
	b, err := aes.NewCipher(k.Sym[:])
	if err != nil {
		panic(err) // 32-byte key: cannot fail
	}
	return cipher.StreamReader{S: cipher.NewCTR(b, k.Nonce[:]), R: d.section()}
}

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

// unwrapFound tries every key on every candidate descriptor.
func (d *decoder) unwrapFound(ctx context.Context, cands []found) (spec.PrivateOptions, found, error) {
	var errs []error
	schemes := map[string]bool{}
	for _, c := range cands {
		entries, err := spec.KeyAnnotations(c.desc.Annotations)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for s := range entries {
			schemes[s] = true
		}
		for _, u := range d.unw {
			for _, e := range entries[u.Scheme()] {
				b, err := u.Unwrap(ctx, e)
				if err != nil {
					if !errors.Is(err, spec.ErrNoKey) || strings.HasPrefix(u.Scheme(), "provider.") {
						errs = append(errs, err)
					}
					continue
				}
				p, err := spec.UnmarshalPrivate(b)
				clear(b)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				return p, c, nil
			}
		}
	}
	var names []string
	for s := range schemes {
		names = append(names, s)
	}
	msg := fmt.Sprintf("no key available to the decoder opens this layer (its recipients use %s)%s", strings.Join(names, ", "), skippedNote(d.skipped))
	if len(errs) > 0 {
		return spec.PrivateOptions{}, found{}, fmt.Errorf("%s: %w: %w", msg, errors.Join(errs...), spec.ErrNoKey)
	}
	return spec.PrivateOptions{}, found{}, fmt.Errorf("%s: %w", msg, spec.ErrNoKey)
}

func skippedNote(skipped []string) string {
	if len(skipped) == 0 {
		return ""
	}
	return fmt.Sprintf(" (skipped %d unusable key file(s): %s)", len(skipped), strings.Join(skipped, "; "))
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
