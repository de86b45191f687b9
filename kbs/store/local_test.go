package store

import (
	"fmt"
	"testing"
	"time"
)

// Moved from kbs/server (the challenge table now lives in Local), same
// assertions: the oldest challenges are evicted first, per-address counts
// follow, and expired ones leave on the next create.
func TestChallengesOldestFirst(t *testing.T) {
	now := time.Now()
	c := newChallengeTable(4)
	var ids []string
	for i := range 6 {
		id := fmt.Sprint("id", i)
		if _, err := c.create(Challenge{ID: id, Tee: "sample", Nonce: "n", Addr: fmt.Sprint("a", i), Expires: now.Add(time.Minute)}, 100, now); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
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
	if _, err := c.create(Challenge{ID: "b", Tee: "sample", Nonce: "n", Addr: "b", Expires: now.Add(2 * time.Minute)}, 100, now.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if c.len() != 1 || len(c.perAddr) != 1 || len(c.queue) != 1 {
		t.Fatalf("after expiry: %d challenges, perAddr %v, queue %d", c.len(), c.perAddr, len(c.queue))
	}
}

// Evictions are reported to OnEvict (the broker's kbs_sessions_evicted_total).
func TestLocalReportsEvictions(t *testing.T) {
	evicted := 0
	l, err := NewLocal(NewMemory(), LocalOptions{MaxChallenges: 2, OnEvict: func(n int) { evicted += n }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := l.CreateChallenge(t.Context(), Challenge{ID: fmt.Sprint(i), Addr: "a", Expires: time.Now().Add(time.Minute)}, 100); err != nil {
			t.Fatal(err)
		}
	}
	if evicted != 3 {
		t.Fatalf("5 challenges into a table of 2: %d evictions reported, want 3", evicted)
	}
}
