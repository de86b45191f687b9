package server

import (
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store"
)

// grant is what an attestation entitles its holder to: the verified token
// claims (as prepared policy input) and the tee key to seal resources to.
type grant struct {
	input     *policy.Input
	teePubKey *protocol.TeePubKey
	status    string
	tee       string
	reasons   []string // the appraisal policy's, for denials
	// tpm attestations: the AK and the quote's qualifying data, which a
	// binding key's certification must repeat (keytransfer.go)
	tpmAK         string
	tpmReportData []byte
	expires       time.Time
	size          int // bytes it keeps alive, for the byte caps of the tables holding it

	sealOnce sync.Once // the sealer is made on first release, then reused
	sealer   *protocol.Sealer
	sealErr  error
}

// grantOverhead bounds what a grant keeps besides its claims: the prepared
// policy input with its decision cache, the sealer, and the map entries
// pointing at it.
const grantOverhead = 2<<10 + policy.MaxDecisionCacheBytes

// seal encrypts data to the grant's tee key, reusing one Sealer per grant.
func (g *grant) seal(data []byte) (*protocol.Response, error) {
	g.sealOnce.Do(func() { g.sealer, g.sealErr = protocol.NewSealer(*g.teePubKey) })
	if g.sealErr != nil {
		return nil, g.sealErr
	}
	return g.sealer.Seal(data)
}

// session is one RCAR session: a challenge (kept in the store.State) until
// it attests, then the holder of a grant.
type session struct {
	id      string
	tee     protocol.Tee
	nonce   string
	expires time.Time
	addr    string // client address key (ratelimit.Key)

	grant *grant // set before the session enters the attested table; then read-only
}

// The same errors whether sessions live here or in a shared store.
var (
	errChallengeUsed    = store.ErrChallengeUsed
	errChallengeUnknown = store.ErrChallengeUnknown
	errTooManyPerAddr   = store.ErrTooManyPerAddr
)

func newSessionID() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	return hex.EncodeToString(raw[:])
}

const shards = 32

// attested is a sharded map of attested sessions with lazy expiry, bounded
// in count and in the bytes their grants keep alive.
type attested struct {
	seed     maphash.Seed
	shards   [shards]attestedShard
	perShard int
	perBytes int
}

type attestedShard struct {
	mu      sync.Mutex
	m       map[string]*session
	bytes   int
	inserts int
}

func newAttested(max, maxBytes int) *attested {
	t := &attested{seed: maphash.MakeSeed(), perShard: max/shards + 1, perBytes: maxBytes/shards + 1}
	for i := range t.shards {
		t.shards[i].m = map[string]*session{}
	}
	return t
}

func (t *attested) shard(id string) *attestedShard {
	return &t.shards[maphash.String(t.seed, id)%shards]
}

// put stores an attested session (s.grant set). When its shard is full of
// live sessions, by count or bytes, it evicts an arbitrary eighth of them
// (their holders get a 401 and attest again) and reports how many went.
// Only attested clients can fill this table, each at the price of an
// attestation the policy accepted.
func (t *attested) put(s *session, now time.Time) int {
	sh := t.shard(s.id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.inserts++
	full := func() bool { return len(sh.m) >= t.perShard || sh.bytes+s.grant.size > t.perBytes }
	if full() || sh.inserts%1024 == 0 {
		for k, v := range sh.m {
			if !now.Before(v.expires) {
				sh.del(k, v)
			}
		}
	}
	evicted := 0
	if full() {
		n := len(sh.m)/8 + 1
		for k, v := range sh.m { // map order is unspecified: an arbitrary choice
			sh.del(k, v)
			if evicted++; evicted >= n && !full() {
				break
			}
		}
	}
	sh.m[s.id] = s
	sh.bytes += s.grant.size
	return evicted
}

func (sh *attestedShard) del(k string, v *session) {
	delete(sh.m, k)
	sh.bytes -= v.grant.size
}

// get returns a live attested session; expired ones are removed.
func (t *attested) get(id string, now time.Time) (*session, bool) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.m[id]
	if !ok {
		return nil, false
	}
	if !now.Before(s.expires) {
		sh.del(id, s)
		return nil, false
	}
	return s, true
}

// tokenCache remembers tokens this broker issued or already verified, so a
// bearer GET skips signature verification and claim conversion. Expiry is
// still checked on every use. It is bounded in count and in bytes; when
// full after dropping expired entries it starts over (every entry can be
// rebuilt from its token).
type tokenCache struct {
	mu       sync.RWMutex
	max      int
	maxBytes int
	bytes    int
	m        map[string]*grant
}

func newTokenCache(max, maxBytes int) *tokenCache {
	return &tokenCache{max: max, maxBytes: maxBytes, m: map[string]*grant{}}
}

func (c *tokenCache) get(tok string) (*grant, bool) {
	c.mu.RLock()
	g, ok := c.m[tok]
	c.mu.RUnlock()
	return g, ok
}

func (c *tokenCache) put(tok string, g *grant, now time.Time) {
	size := g.size + len(tok)
	if size > c.maxBytes/64 {
		return // one entry may not take more than 1/64 of the cache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[tok]; ok {
		return
	}
	if len(c.m) >= c.max || c.bytes+size > c.maxBytes {
		for k, v := range c.m {
			if !now.Before(v.expires) {
				delete(c.m, k)
				c.bytes -= v.size + len(k)
			}
		}
		if len(c.m) >= c.max || c.bytes+size > c.maxBytes {
			clear(c.m)
			c.bytes = 0
		}
	}
	c.m[tok] = g
	c.bytes += size
}
