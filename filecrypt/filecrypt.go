// Package filecrypt encrypts and decrypts files of any size (VM disk
// images, blobs) in bounded memory with a standard streaming AEAD: Tink's
// AES-GCM-HKDF streaming format (AES256_GCM_HKDF_1MB: HKDF-SHA256 derives
// a per-file AES-256-GCM key from the 32-byte main key and a random salt;
// 1 MiB ciphertext segments, each sealed with a nonce that carries its
// index and a last-segment flag). Any Tink implementation (Go, Java, C++,
// Python) reads a coffer file given the raw key and empty associated data,
// with a keyset holding an AesGcmHkdfStreamingKey of those parameters.
//
// The format detects a changed bit, a swapped or dropped segment and a
// truncation, also at a segment boundary (the last segment's flag is
// authenticated). Decryption releases a segment only after it
// authenticated, and the *File functions commit the output only once the
// whole file authenticated (and, when asked, its SHA-384 matched): a
// failure leaves no output file.
//
// Memory: two segments plus a copy buffer (about 4 MiB) whatever the file
// size. The SHA-384 of the ciphertext (SecL's flavor digest) is computed in
// the same pass.
package filecrypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	tinksubtle "github.com/tink-crypto/tink-go/v2/streamingaead/subtle"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/internal/ctxio"
	"github.com/coffer-dev/coffer/spec"
)

// Format parameters (Tink's AES256_GCM_HKDF_1MB template).
const (
	KeySize     = 32
	SegmentSize = 1 << 20
	hkdfHash    = "SHA256"
	copyBuffer  = 1 << 20
)

// Result describes one encryption or decryption.
type Result struct {
	PlainSize  int64  // plaintext bytes
	CipherSize int64  // ciphertext bytes
	Digest     []byte // of the ciphertext: SHA-256 (streaming format) or SHA-384 (SecL's format)
}

func newAEAD(key []byte) (*tinksubtle.AESGCMHKDF, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("filecrypt: key of %d bytes, want %d: %w", len(key), KeySize, spec.ErrNoKey)
	}
	return tinksubtle.NewAESGCMHKDF(key, hkdfHash, KeySize, SegmentSize, 0)
}

type countWriter struct {
	w io.Writer
	h *asyncHash
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// countReader counts what it reads and, when h is set, hashes it.
type countReader struct {
	r io.Reader
	h *asyncHash
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	c.n += int64(n)
	return n, err
}

// Encrypt writes src encrypted under key to dst.
func Encrypt(ctx context.Context, dst io.Writer, src io.Reader, key []byte) (*Result, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	cw := &countWriter{w: dst, h: newAsyncHashOf(sha256.New())}
	w, err := a.NewEncryptingWriter(cw, nil)
	if err != nil {
		cw.h.stop()
		return nil, fmt.Errorf("filecrypt: %w", err)
	}
	n, err := io.CopyBuffer(w, ctxio.Reader(ctx, src), make([]byte, copyBuffer))
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		cw.h.stop()
		return nil, fmt.Errorf("filecrypt: encrypting: %w", err)
	}
	return &Result{PlainSize: n, CipherSize: cw.n, Digest: cw.h.Sum()}, nil
}

// Decrypt writes the plaintext of src to dst, segment by segment as each
// authenticates. A failure (spec.ErrIntegrity for anything the format
// detects) can come after dst received earlier segments: use DecryptFile,
// or stage dst, to commit nothing unauthenticated. Result.Digest is set
// only with WithDigest (hashing costs more than the cipher).
func Decrypt(ctx context.Context, dst io.Writer, src io.Reader, key []byte, opts ...Option) (res *Result, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	cr := &countReader{r: ctxio.Reader(ctx, src)}
	if o.digest != nil {
		cr.h = newAsyncHashOf(hashFor(o.digest))
		defer func() {
			if err != nil {
				cr.h.stop()
			}
		}()
	}
	r, err := a.NewDecryptingReader(cr, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("filecrypt: not a coffer/Tink AES-GCM-HKDF file or truncated header (%v): %w", err, spec.ErrIntegrity)
	}
	n, err := io.CopyBuffer(dst, onlyReader{r}, make([]byte, copyBuffer))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("filecrypt: %w", err)
		}
		return nil, fmt.Errorf("filecrypt: ciphertext does not authenticate (tampered, truncated, reordered or wrong key: %v): %w", err, spec.ErrIntegrity)
	}
	res = &Result{PlainSize: n, CipherSize: cr.n}
	if cr.h != nil {
		res.Digest = cr.h.Sum()
		if !equalDigest(o.digest, res.Digest) {
			return nil, fmt.Errorf("filecrypt: not the file the flavor names (digest differs): %w", spec.ErrIntegrity)
		}
	}
	return res, nil
}

// onlyReader hides WriterTo/ReaderFrom so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

type options struct {
	digest []byte
	mode   os.FileMode
	secl   bool
}

// Option configures EncryptFile and DecryptFile.
type Option func(*options)

// WithDigest makes Decrypt and DecryptFile require the ciphertext's
// digest to be d (a flavor's encryption.digest: SHA-384, or SHA-256 when d
// has 32 bytes) before they commit the output.
func WithDigest(d []byte) Option { return func(o *options) { o.digest = d } }

// WithSecLFormat makes EncryptFile write SecL's whole-file format (see
// EncryptSecL) instead of the streaming one. DecryptFile recognizes
// either format by its first bytes.
func WithSecLFormat() Option { return func(o *options) { o.secl = true } }

// WithMode sets the output file's permission bits. Default: 0600.
func WithMode(m os.FileMode) Option { return func(o *options) { o.mode = m } }

// EncryptFile encrypts the file in to the file out, committed atomically.
func EncryptFile(ctx context.Context, in, out string, key []byte, opts ...Option) (*Result, error) {
	return fileToFile(in, out, opts, func(w io.Writer, src io.Reader, o options) (*Result, error) {
		if o.secl {
			return EncryptSecL(ctx, w, src, key)
		}
		return Encrypt(ctx, w, src, key)
	})
}

// DecryptFile decrypts the file in to the file out. The plaintext goes to
// an unnamed file in out's directory (O_TMPFILE: a killed process leaves
// nothing; a named temp file where the file system lacks it), which
// becomes out only when every segment authenticated and, with WithDigest,
// the ciphertext's digest matched.
// Either format is recognized by its first bytes.
func DecryptFile(ctx context.Context, in, out string, key []byte, opts ...Option) (*Result, error) {
	return fileToFile(in, out, opts, func(w io.Writer, src io.Reader, _ options) (*Result, error) {
		head := make([]byte, len(seclMagic))
		n, _ := io.ReadFull(src, head)
		r := io.MultiReader(bytes.NewReader(head[:n]), src)
		if IsSecL(head[:n]) {
			return DecryptSecL(ctx, w, r, key, opts...)
		}
		return Decrypt(ctx, w, r, key, opts...)
	})
}

// fileToFile runs f from the file in into a temp file next to out, which
// becomes out (mode from the options, default 0600) only when f succeeds.
func fileToFile(in, out string, opts []Option, f func(w io.Writer, src io.Reader, o options) (*Result, error)) (*Result, error) {
	o := options{mode: 0o600}
	for _, opt := range opts {
		opt(&o)
	}
	src, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("filecrypt: %w", err)
	}
	defer src.Close()
	var res *Result
	err = atomicfile.WriteFunc(out, func(w io.Writer) error {
		var err error
		res, err = f(w, src, o)
		return err
	}, atomicfile.Mode(o.mode), atomicfile.Unlinked()) // staged plaintext has no name until it authenticated
	if err != nil {
		return nil, err
	}
	return res, nil
}
