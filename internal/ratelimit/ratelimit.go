// Package ratelimit is coffer's per-client-address token bucket for
// unauthenticated endpoints (the broker's /auth and /attest, the workload
// service's key relay), and the one definition of a client's address.
package ratelimit

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// PerAddr is a token bucket per client address for the unauthenticated
// endpoints (/auth, /attest). It holds at most max addresses: when full,
// buckets that have refilled completely (idle clients) are dropped first,
// then all of them, which only ever forgives.
type PerAddr struct {
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

// Validate checks a configured rate and burst (0 means off; negative is an
// error), the one check every daemon's WithRateLimit option makes.
func Validate(ratePerSec float64, burst int) error {
	if ratePerSec < 0 || burst < 0 {
		return fmt.Errorf("rate limit %v/s burst %d: must not be negative", ratePerSec, burst)
	}
	return nil
}

// New returns a limiter of ratePerSec with bursts of burst for at most
// maxAddrs addresses at a time; nil (no limit) when ratePerSec <= 0.
func New(ratePerSec float64, burst, maxAddrs int) *PerAddr {
	if ratePerSec <= 0 {
		return nil
	}
	return &PerAddr{rate: ratePerSec, burst: float64(max(burst, 1)), max: maxAddrs, m: map[string]*bucket{}}
}

// Allow takes one token from addr's bucket; false means the caller should
// wait about retryAfter.
func (l *PerAddr) Allow(addr string, now time.Time) (ok bool, retryAfter time.Duration) {
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

func (l *PerAddr) prune(now time.Time) {
	for k, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, k)
		}
	}
	if len(l.m) >= l.max {
		clear(l.m)
	}
}

// Key names the client address that per-address limits count: the IP
// of the connection (never a forwarded-for header, which the client
// writes), IPv6 addresses by their /64, which one host usually holds.
func Key(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
