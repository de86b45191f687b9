// Package layercrypt implements the ocicrypt layer cipher: AES-256-CTR over
// the blob, HMAC-SHA256 (keyed with the same key) over the ciphertext. It
// streams with bounded memory and hashes on separate goroutines so the
// SHA-256-class passes of a layer overlap on different cores. Stdlib only.
package layercrypt

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/coffer-dev/coffer/spec"
)

// Key is the per-layer secret: a 32-byte AES key (also the HMAC key) and
// the 16-byte initial counter block.
type Key struct {
	Sym   [32]byte
	Nonce [16]byte
}

// NewKey draws a fresh random key and nonce.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k.Sym[:]); err != nil {
		return k, fmt.Errorf("drawing layer key: %w", err)
	}
	if _, err := rand.Read(k.Nonce[:]); err != nil {
		return k, fmt.Errorf("drawing layer nonce: %w", err)
	}
	return k, nil
}

// KeyFromOptions builds a Key from unwrapped private options.
func KeyFromOptions(p spec.PrivateOptions) (Key, error) {
	var k Key
	if len(p.SymKey) != 32 || len(p.Nonce()) != 16 {
		return k, fmt.Errorf("layer key or nonce has the wrong size: %w", spec.ErrIntegrity)
	}
	copy(k.Sym[:], p.SymKey)
	copy(k.Nonce[:], p.Nonce())
	return k, nil
}

func (k *Key) stream() cipher.Stream {
	b, _ := aes.NewCipher(k.Sym[:]) // 32-byte key: cannot fail
	return cipher.NewCTR(b, k.Nonce[:])
}

// PlaintextOf decrypts r as it is read, WITHOUT authenticating it: only for
// ciphertext whose HMAC already verified (Decrypt, or a verifying first
// pass over a spooled copy, as the containerd decoder makes).
func PlaintextOf(r io.Reader, k Key) io.Reader { return cipher.StreamReader{S: k.stream(), R: r} }

// Sealed describes a ciphertext produced by Encrypt.
type Sealed struct {
	Size        int64
	HMAC        [32]byte // HMAC-SHA256(key, ciphertext): goes into pubopts
	Digest      [32]byte // SHA-256 of the ciphertext: the new descriptor digest
	PlainDigest [32]byte // SHA-256 of the plaintext, when WithPlainDigest was given
}

// Opened describes a plaintext produced by Decrypt.
type Opened struct {
	Size   int64
	Digest [32]byte // SHA-256 of the plaintext
}

type options struct{ plainDigest bool }

// Option tunes Encrypt.
type Option func(*options)

// WithPlainDigest makes Encrypt also hash the plaintext (default off: the
// caller usually knows the source digest already).
func WithPlainDigest() Option { return func(o *options) { o.plainDigest = true } }

// Encrypt copies src to dst encrypted under k and returns the HMAC and
// digests needed for the descriptor.
func Encrypt(ctx context.Context, dst io.Writer, src io.Reader, k Key, opts ...Option) (Sealed, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	var s Sealed
	mac := hmac.New(sha256.New, k.Sym[:])
	dig := sha256.New()
	hs := []tap{{mac, true}, {dig, true}}
	var plain hash.Hash
	if o.plainDigest {
		plain = sha256.New()
		hs = append(hs, tap{plain, false})
	}
	n, err := pump(ctx, dst, src, k.stream(), hs)
	if err != nil {
		return s, err
	}
	s.Size = n
	mac.Sum(s.HMAC[:0])
	dig.Sum(s.Digest[:0])
	if plain != nil {
		plain.Sum(s.PlainDigest[:0])
	}
	return s, nil
}

// Decrypt copies src (ciphertext) to dst as plaintext. The HMAC is checked
// at the end (in constant time): on any error, including ErrIntegrity, the
// caller must discard everything written to dst.
func Decrypt(ctx context.Context, dst io.Writer, src io.Reader, k Key, wantMAC []byte) (Opened, error) {
	var out Opened
	mac := hmac.New(sha256.New, k.Sym[:])
	dig := sha256.New()
	n, err := pump(ctx, dst, src, k.stream(), []tap{{mac, false}, {dig, true}})
	if err != nil {
		return out, err
	}
	if !hmac.Equal(mac.Sum(nil), wantMAC) {
		return out, fmt.Errorf("layer HMAC mismatch (wrong key, or tampered or truncated blob): %w", spec.ErrIntegrity)
	}
	out.Size = n
	dig.Sum(out.Digest[:0])
	return out, nil
}

// tap is a hash fed one side of the transform: the input (what is read
// from src) or the output (what is written to dst).
type tap struct {
	h      hash.Hash
	output bool
}

const (
	chunkSize = 1 << 20
	inFlight  = 6
)

type chunk struct {
	in, out []byte
	n       int
	refs    atomic.Int32
}

var chunkPool = sync.Pool{New: func() any {
	return &chunk{in: make([]byte, chunkSize), out: make([]byte, chunkSize)}
}}

// pump reads src, XORs it with the key stream, writes the result to dst and
// feeds every tap on its own goroutine, so hashing overlaps with the cipher
// and the writes. Memory is bounded by inFlight chunk pairs.
func pump(ctx context.Context, dst io.Writer, src io.Reader, ks cipher.Stream, taps []tap) (int64, error) {
	free := make(chan *chunk, inFlight)
	for range inFlight {
		free <- chunkPool.Get().(*chunk)
	}
	queues := make([]chan *chunk, len(taps))
	var wg sync.WaitGroup
	for i := range taps {
		queues[i] = make(chan *chunk, inFlight)
		wg.Add(1)
		go func(t tap, q chan *chunk) {
			defer wg.Done()
			for c := range q {
				buf := c.in
				if t.output {
					buf = c.out
				}
				t.h.Write(buf[:c.n])
				if c.refs.Add(-1) == 0 {
					free <- c
				}
			}
		}(taps[i], queues[i])
	}
	var total int64
	var err error
	for err == nil {
		if err = ctx.Err(); err != nil {
			break
		}
		var c *chunk
		select {
		case <-ctx.Done():
			err = ctx.Err()
			continue
		case c = <-free:
		}
		n, rerr := io.ReadFull(src, c.in)
		if n > 0 {
			ks.XORKeyStream(c.out[:n], c.in[:n])
			c.n = n
			c.refs.Store(int32(len(taps)))
			for _, q := range queues {
				q <- c
			}
			if _, werr := dst.Write(c.out[:n]); werr != nil {
				err = fmt.Errorf("writing layer: %w", werr)
				break
			}
			total += int64(n)
		} else {
			free <- c
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = fmt.Errorf("reading layer: %w", rerr)
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	for range inFlight {
		chunkPool.Put(<-free)
	}
	return total, err
}
