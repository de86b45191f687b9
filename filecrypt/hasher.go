package filecrypt

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"hash"
	"sync"
)

// asyncHash feeds a hash on its own goroutine so hashing the
// ciphertext overlaps the cipher (two cores: one ciphers, one hashes).
// Write copies p into one of a few recycled chunk buffers, so memory stays
// bounded (hashDepth chunks of at most hashChunk bytes).
type asyncHash struct {
	h    hash.Hash
	ch   chan []byte
	free chan []byte
	done sync.WaitGroup
	once sync.Once
}

const (
	hashChunk = 1 << 20
	hashDepth = 4
)

func newAsyncHashOf(h hash.Hash) *asyncHash {
	a := &asyncHash{h: h, ch: make(chan []byte, hashDepth), free: make(chan []byte, hashDepth)}
	for range hashDepth {
		a.free <- make([]byte, 0, hashChunk)
	}
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		for b := range a.ch {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

// Write queues p for hashing; it never fails.
func (a *asyncHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := <-a.free
		k := min(len(p), cap(b))
		b = append(b, p[:k]...)
		a.ch <- b
		p = p[k:]
	}
	return n, nil
}

// Sum waits for the queued bytes and returns the digest; a is done.
func (a *asyncHash) Sum() []byte {
	a.stop()
	return a.h.Sum(nil)
}

// stop ends the goroutine when the digest is not needed (an error path).
// Calling it again (or after Sum) does nothing.
func (a *asyncHash) stop() {
	a.once.Do(func() { close(a.ch) })
	a.done.Wait()
}

// hashFor returns the hash a flavor digest of this length names: SHA-256
// (32 bytes, older SecL WPMs) or SHA-384 (48 bytes).
func hashFor(digest []byte) hash.Hash {
	if len(digest) == sha256.Size {
		return sha256.New()
	}
	return sha512.New384()
}

// digestOf hashes data with the hash want's length names.
func digestOf(want, data []byte) []byte {
	h := hashFor(want)
	h.Write(data)
	return h.Sum(nil)
}

func equalDigest(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
