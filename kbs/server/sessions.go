package server

import (
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// grant is what an attestation entitles its holder to: the verified token
// claims (as prepared policy input) and the tee key to seal resources to.
type grant struct {
	input     *policy.Input
	teePubKey *protocol.TeePubKey
	status    string
	tee       string
	expires   time.Time

	sealOnce sync.Once // the sealer is made on first release, then reused
	sealer   *protocol.Sealer
	sealErr  error
}

// seal encrypts data to the grant's tee key, reusing one Sealer per grant.
func (g *grant) seal(data []byte) (*protocol.Response, error) {
	g.sealOnce.Do(func() { g.sealer, g.sealErr = protocol.NewSealer(*g.teePubKey) })
	if g.sealErr != nil {
		return nil, g.sealErr
	}
	return g.sealer.Seal(data)
}

type session struct {
	id      string
	tee     protocol.Tee
	nonce   string
	expires time.Time

	mu        sync.Mutex
	nonceUsed bool
	grant     *grant
}

const shards = 32

// sessionTable is a sharded map of live sessions with lazy expiry.
type sessionTable struct {
	seed     maphash.Seed
	max      int
	shards   [shards]sessionShard
	perShard int
}

type sessionShard struct {
	mu      sync.Mutex
	m       map[string]*session
	inserts int
}

func newSessionTable(max int) *sessionTable {
	t := &sessionTable{seed: maphash.MakeSeed(), max: max, perShard: max/shards + 1}
	for i := range t.shards {
		t.shards[i].m = map[string]*session{}
	}
	return t
}

func (t *sessionTable) shard(id string) *sessionShard {
	return &t.shards[maphash.String(t.seed, id)%shards]
}

// create makes a session. When its shard is full of live sessions it
// evicts an arbitrary eighth of them (their holders get a 401 and attest
// again) rather than refusing newcomers, and reports how many went.
func (t *sessionTable) create(tee protocol.Tee, nonce string, expires, now time.Time) (*session, int) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	s := &session{id: id, tee: tee, nonce: nonce, expires: expires}
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.inserts++
	if len(sh.m) >= t.perShard || sh.inserts%1024 == 0 {
		for k, v := range sh.m {
			if !now.Before(v.expires) {
				delete(sh.m, k)
			}
		}
	}
	evicted := 0
	if len(sh.m) >= t.perShard {
		n := len(sh.m)/8 + 1
		for k := range sh.m { // map order is unspecified: an arbitrary choice
			delete(sh.m, k)
			if evicted++; evicted >= n {
				break
			}
		}
	}
	sh.m[id] = s
	return s, evicted
}

// get returns a live session; expired ones are removed.
func (t *sessionTable) get(id string, now time.Time) (*session, bool) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.m[id]
	if !ok {
		return nil, false
	}
	if !now.Before(s.expires) {
		delete(sh.m, id)
		return nil, false
	}
	return s, true
}

// tokenCache remembers tokens this broker issued or already verified, so a
// bearer GET skips signature verification and claim conversion. Expiry is
// still checked on every use.
type tokenCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]*grant
}

func newTokenCache(max int) *tokenCache { return &tokenCache{max: max, m: map[string]*grant{}} }

func (c *tokenCache) get(tok string) (*grant, bool) {
	c.mu.RLock()
	g, ok := c.m[tok]
	c.mu.RUnlock()
	return g, ok
}

func (c *tokenCache) put(tok string, g *grant, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, v := range c.m {
			if !now.Before(v.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[tok] = g
}
