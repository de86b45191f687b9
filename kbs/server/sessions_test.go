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

func TestChallengesOldestFirst(t *testing.T) {
	now := time.Now()
	c := newChallenges(4, 100)
	var ids []string
	for i := range 6 {
		s, _, err := c.create("sample", "n", fmt.Sprint("a", i), now.Add(time.Minute), now)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.id)
	}
	for i, id := range ids {
		_, err := c.peek(id, now)
		if (i < 2) != (err != nil) {
			t.Fatalf("challenge %d: %v (the two oldest should be gone)", i, err)
		}
	}
	if len(c.perAddr) != 4 {
		t.Fatalf("per-address counts %v", c.perAddr)
	}
	// Expired ones leave on the next create, and so do their counts.
	if _, _, err := c.create("sample", "n", "b", now.Add(2*time.Minute), now.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if c.len() != 1 || len(c.perAddr) != 1 || len(c.queue) != 1 {
		t.Fatalf("after expiry: %d challenges, perAddr %v, queue %d", c.len(), c.perAddr, len(c.queue))
	}
}
