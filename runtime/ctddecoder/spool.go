package ctddecoder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/ctxio"
	"github.com/coffer-dev/coffer/layercrypt"
	"github.com/coffer-dev/coffer/runtime/tenant"
	"github.com/coffer-dev/coffer/spec"
)

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
					_, serr = io.Copy(spool, ctxio.Reader(ctx, src))
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
	if _, err := io.Copy(h, ctxio.Reader(ctx, d.section())); err != nil {
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
