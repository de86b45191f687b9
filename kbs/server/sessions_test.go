package server

import (
	"fmt"
	"testing"
	"time"
)

// The caches are bounded in bytes, not only in entries (issue 12 finding 2:
// 50k tokens of 1.2 MB each was the old worst case).
func TestTokenCacheBytes(t *testing.T) {
	now := time.Now()
	c := newTokenCache(1000, 1<<20)
	for i := range 500 {
		c.put(fmt.Sprintf("tok%d", i), &grant{size: 10 << 10, expires: now.Add(time.Hour)}, now)
		if c.bytes > c.maxBytes {
			t.Fatalf("after %d puts: %d bytes cached, limit %d", i+1, c.bytes, c.maxBytes)
		}
	}
	// One entry larger than 1/64 of the cache is not cached at all.
	c.put("huge", &grant{size: 32 << 10, expires: now.Add(time.Hour)}, now)
	if _, ok := c.get("huge"); ok {
		t.Fatal("an oversized grant was cached")
	}
}

func TestAttestedBytes(t *testing.T) {
	now := time.Now()
	a := newAttested(1_000_000, 4<<20)
	evicted := 0
	for range 2000 {
		evicted += a.put(&session{id: newSessionID(), expires: now.Add(time.Hour), grant: &grant{size: 8 << 10}}, now)
	}
	total := 0
	for i := range a.shards {
		if a.shards[i].bytes > a.perBytes {
			t.Fatalf("shard %d holds %d bytes, limit %d", i, a.shards[i].bytes, a.perBytes)
		}
		total += a.shards[i].bytes
	}
	if evicted == 0 || total > 4<<20+shards {
		t.Fatalf("16 MiB of grants into a 4 MiB table: %d evicted, %d bytes kept", evicted, total)
	}
}
