package server

import (
	"sync"
	"time"
)

// addrLimiter is a token bucket per client address for the unauthenticated
// endpoints (/auth, /attest). It holds at most max addresses: when full,
// buckets that have refilled completely (idle clients) are dropped first,
// then all of them, which only ever forgives.
type addrLimiter struct {
	mu    sync.Mutex
	rate  float64 // tokens per second
	burst float64
	max   int
	m     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newAddrLimiter(ratePerSec float64, burst, maxAddrs int) *addrLimiter {
	if ratePerSec <= 0 {
		return nil
	}
	return &addrLimiter{rate: ratePerSec, burst: float64(max(burst, 1)), max: maxAddrs, m: map[string]*bucket{}}
}

// allow takes one token from addr's bucket; false means the caller should
// wait about retryAfter.
func (l *addrLimiter) allow(addr string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.m[addr]
	if !found {
		if len(l.m) >= l.max {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[addr] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

func (l *addrLimiter) prune(now time.Time) {
	for k, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, k)
		}
	}
	if len(l.m) >= l.max {
		clear(l.m)
	}
}
