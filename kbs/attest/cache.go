package attest

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// DefaultCacheBytes bounds what one verifier remembers of per-platform
// checks (Config.CacheBytes): a few thousand platforms' certificate chains.
const DefaultCacheBytes = 4 << 20

// checkCache remembers the outcome of per-platform checks that passed
// (a VCEK's chain to AMD's ARK, a parsed endorsement certificate), so that
// only what is per report (its signature, its binding, its TCB) is checked
// on every attestation. It is an LRU bounded in bytes (each entry's
// estimated size, key included); failures are never cached. Safe for
// concurrent use; a nil *checkCache caches nothing.
type checkCache struct {
	mu    sync.Mutex
	max   int64
	used  int64
	order *list.List // front: most recently used
	m     map[[32]byte]*list.Element
}

type cacheEntry struct {
	key  [32]byte
	val  any
	size int64
}

// cacheEntryOverhead is what an entry costs beyond its value: key, list
// element, map slot.
const cacheEntryOverhead = 128

// newCheckCache returns a cache of max bytes (0: DefaultCacheBytes), or nil
// (no caching) for a negative max.
func newCheckCache(max int64) *checkCache {
	if max < 0 {
		return nil
	}
	if max == 0 {
		max = DefaultCacheBytes
	}
	return &checkCache{max: max, order: list.New(), m: map[[32]byte]*list.Element{}}
}

func (c *checkCache) get(key [32]byte) (any, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).val, true
}

// put adds val (of about size bytes) under key, evicting the least
// recently used entries to stay within the bound; a value larger than the
// whole cache is not kept.
func (c *checkCache) put(key [32]byte, val any, size int64) {
	if c == nil {
		return
	}
	size += cacheEntryOverhead
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		old := e.Value.(*cacheEntry)
		c.used += size - old.size
		old.val, old.size = val, size
		c.order.MoveToFront(e)
	} else {
		c.m[key] = c.order.PushFront(&cacheEntry{key: key, val: val, size: size})
		c.used += size
	}
	for c.used > c.max {
		last := c.order.Back()
		ent := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.m, ent.key)
		c.used -= ent.size
	}
}

// bytes is the cache's current estimated size.
func (c *checkCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// cacheKey hashes a check's kind and inputs into a cache key; every part
// is length-prefixed so that no two inputs collide by concatenation.
func cacheKey(kind string, parts ...[]byte) [32]byte {
	h := sha256.New()
	write := func(b []byte) {
		var n [8]byte
		for i := range 8 {
			n[i] = byte(uint64(len(b)) >> (8 * i))
		}
		h.Write(n[:])
		h.Write(b)
	}
	write([]byte(kind))
	for _, p := range parts {
		write(p)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// validWindow is when a verified certificate chain is valid: the latest
// NotBefore and the earliest NotAfter of its certificates. A cached chain
// check holds at any instant inside it, as x509's check would.
type validWindow struct{ from, until time.Time }

func chainWindow(chain []*x509.Certificate) validWindow {
	var w validWindow
	for i, c := range chain {
		if i == 0 || c.NotBefore.After(w.from) {
			w.from = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(w.until) {
			w.until = c.NotAfter
		}
	}
	return w
}

func (w validWindow) contains(t time.Time) bool { return !t.Before(w.from) && !t.After(w.until) }

// parseCertCached parses a DER certificate through the cache (parsed
// certificates are only read afterwards, so they can be shared).
func (c *checkCache) parseCert(der []byte, parse func([]byte) (*x509.Certificate, error)) (*x509.Certificate, error) {
	key := cacheKey("cert", der)
	if v, ok := c.get(key); ok {
		return v.(*x509.Certificate), nil
	}
	cert, err := parse(der)
	if err != nil {
		return nil, err
	}
	c.put(key, cert, 4*int64(len(der)))
	return cert, nil
}
