package wls

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-dev/coffer/internal/ratelimit"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// Every host reaches the owner's broker through this service, so the
// broker sees one client address for all of them and applies its
// per-address limits (coffer kbs serve: 50 /auth+/attest calls per second,
// 1,024 unanswered challenges) to all of them together. Unless the broker
// trusts this service's X-Forwarded-For (kbs serve --trusted-proxy), the
// service itself must keep one caller from spending that shared budget
// (review 3, W20):
//
//   - each caller (client address) may hold DefaultMaxPendingPerCaller
//     unanswered challenges;
//   - all callers together hold at most DefaultMaxPendingPerBroker per
//     broker; when full, the oldest challenge of the caller holding most is
//     spent at the broker (an empty attestation: the broker frees it)
//     before a new one is opened, so the broker never counts more;
//   - calls to a broker pass a gate of DefaultBrokerRate per second that
//     serves waiting callers in turn, one waiting call per caller: a flood
//     from many addresses slows a host by one turn per flooding address,
//     it does not starve it.

// Defaults of the fairness limits (WithBrokerRate, WithMaxPendingPerBroker).
const (
	DefaultMaxPendingPerBroker = 512 // below kbs serve's 1,024 per address
	DefaultBrokerRate          = 40  // calls per second, below kbs serve's 50
	DefaultBrokerBurst         = 100 // below kbs serve's 200
	// maxGateWait is how long a call waits for its turn before 429.
	maxGateWait = 20 * time.Second
	// maxGateQueue bounds the callers waiting at one gate.
	maxGateQueue = 4096
)

// WithBrokerRate sets the gate's rate and burst for calls to each broker
// (see above). 0 turns the gate off: right when the broker trusts this
// service's X-Forwarded-For, since it then limits each host itself.
// Default DefaultBrokerRate, DefaultBrokerBurst.
func WithBrokerRate(perSecond float64, burst int) Option {
	return func(o *options) error {
		o.brokerRate, o.brokerBurst = perSecond, burst
		return ratelimit.Validate(perSecond, burst)
	}
}

// WithMaxPendingPerBroker bounds the unanswered challenges all callers
// together hold at one broker. Default DefaultMaxPendingPerBroker.
func WithMaxPendingPerBroker(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("wls: max pending challenges per broker must be ≥ 1, got %d", n)
		}
		o.maxPerBroker = n
		return nil
	}
}

// pendingTTL is how long a relayed challenge counts (the broker's session lifetime).
const pendingTTL = 5 * time.Minute

// maxPendingTotal bounds the table (every caller together).
const maxPendingTotal = 65536

type pendingChallenge struct {
	caller, base string
	created      time.Time
}

// pendingChallenges counts the broker challenges relayed and not yet
// answered, per caller and per broker.
type pendingChallenges struct {
	mu         sync.Mutex
	maxCaller  int
	maxBroker  int
	bySession  map[string]pendingChallenge
	perCaller  map[string]int
	perBroker  map[string]int
	perBrokerC map[[2]string]int // (base, caller)
	swept      time.Time
}

func newPendingChallenges(maxCaller, maxBroker int) *pendingChallenges {
	return &pendingChallenges{maxCaller: maxCaller, maxBroker: maxBroker, bySession: map[string]pendingChallenge{},
		perCaller: map[string]int{}, perBroker: map[string]int{}, perBrokerC: map[[2]string]int{}}
}

func dec[K comparable](m map[K]int, k K) {
	if m[k]--; m[k] <= 0 {
		delete(m, k)
	}
}

func (p *pendingChallenges) dropLocked(sess string) {
	c, ok := p.bySession[sess]
	if !ok {
		return
	}
	delete(p.bySession, sess)
	dec(p.perCaller, c.caller)
	dec(p.perBroker, c.base)
	dec(p.perBrokerC, [2]string{c.base, c.caller})
}

// admit reports whether caller may open another challenge at base now,
// and which challenge (if any) must be spent at the broker first to make
// room: the oldest of the caller holding most there.
func (p *pendingChallenges) admit(caller, base string, now time.Time) (ok bool, evict string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.swept) > time.Second || len(p.bySession) >= maxPendingTotal {
		for s, c := range p.bySession {
			if now.Sub(c.created) >= pendingTTL {
				p.dropLocked(s)
			}
		}
		p.swept = now
	}
	// Full of live entries (callers from very many addresses): forget
	// arbitrary ones rather than refuse everyone; the table only counts.
	for s := range p.bySession {
		if len(p.bySession) < maxPendingTotal {
			break
		}
		p.dropLocked(s)
	}
	if p.perCaller[caller] >= p.maxCaller {
		return false, ""
	}
	if p.perBroker[base] < p.maxBroker {
		return true, ""
	}
	var victim string
	var vc pendingChallenge
	most := 0
	for s, c := range p.bySession {
		if c.base != base {
			continue
		}
		n := p.perBrokerC[[2]string{base, c.caller}]
		if n > most || n == most && c.created.Before(vc.created) {
			victim, vc, most = s, c, n
		}
	}
	p.dropLocked(victim)
	return true, victim
}

func (p *pendingChallenges) add(sess, caller, base string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.bySession[sess]; ok {
		return
	}
	p.bySession[sess] = pendingChallenge{caller: caller, base: base, created: now}
	p.perCaller[caller]++
	p.perBroker[base]++
	p.perBrokerC[[2]string{base, caller}]++
}

// done forgets a challenge its host answered.
func (p *pendingChallenges) done(sess string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(sess)
}

// errBusy: the gate did not give the call a turn in time.
var errBusy = errors.New("the image owner's broker is busy with other hosts' requests")

// brokerGate is a token bucket whose tokens go to waiting callers in
// turn (each caller waits with at most one call).
type brokerGate struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	tokens  float64
	last    time.Time
	queue   []*gateWaiter
	waiting map[string]*gateWaiter
	running bool
}

type gateWaiter struct {
	caller string
	ch     chan struct{}
}

func (s *Server) gate(base string) *brokerGate {
	if s.o.brokerRate <= 0 {
		return nil
	}
	s.gatesMu.Lock()
	defer s.gatesMu.Unlock()
	g, ok := s.gates[base]
	if !ok {
		g = &brokerGate{rate: s.o.brokerRate, burst: float64(s.o.brokerBurst), tokens: float64(s.o.brokerBurst),
			last: time.Now(), waiting: map[string]*gateWaiter{}}
		s.gates[base] = g
	}
	return g
}

func (g *brokerGate) refill(now time.Time) {
	g.tokens = min(g.burst, g.tokens+now.Sub(g.last).Seconds()*g.rate)
	g.last = now
}

// acquire waits for caller's turn (nil g: no gate).
func (g *brokerGate) acquire(ctx context.Context, caller string) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	g.refill(time.Now())
	if len(g.queue) == 0 && g.tokens >= 1 {
		g.tokens--
		g.mu.Unlock()
		return nil
	}
	if _, dup := g.waiting[caller]; dup || len(g.queue) >= maxGateQueue {
		g.mu.Unlock()
		return errBusy
	}
	w := &gateWaiter{caller: caller, ch: make(chan struct{})}
	g.queue = append(g.queue, w)
	g.waiting[caller] = w
	if !g.running {
		g.running = true
		go g.dispatch()
	}
	g.mu.Unlock()
	t := time.NewTimer(maxGateWait)
	defer t.Stop()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-w.ch: // its turn came meanwhile
		return nil
	default:
	}
	for i, q := range g.queue {
		if q == w {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			break
		}
	}
	delete(g.waiting, caller)
	return errBusy
}

// dispatch hands tokens to the waiting callers in turn until none waits.
func (g *brokerGate) dispatch() {
	for {
		g.mu.Lock()
		g.refill(time.Now())
		for g.tokens >= 1 && len(g.queue) > 0 {
			w := g.queue[0]
			g.queue = g.queue[1:]
			delete(g.waiting, w.caller)
			g.tokens--
			close(w.ch)
		}
		if len(g.queue) == 0 {
			g.queue = nil
			g.running = false
			g.mu.Unlock()
			return
		}
		wait := time.Duration((1 - g.tokens) / g.rate * float64(time.Second))
		g.mu.Unlock()
		time.Sleep(max(wait, time.Millisecond))
	}
}

// clientIP is the caller's address as the broker is told it.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// relayChallenge opens a broker session for the caller, within its
// pending-challenge budget, and relays the nonce.
func (s *Server) relayChallenge(w http.ResponseWriter, r *http.Request, what, base string) {
	caller := ratelimit.Key(r.RemoteAddr)
	ok, evict := s.pending.admit(caller, base, s.o.now())
	if !ok {
		s.audit(r, what, "refused", "too many unanswered challenges from this address")
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusTooManyRequests, protocol.ErrTooManyRequests,
			fmt.Sprintf("this address holds %d unanswered broker challenges: answer them (POST the attestation) or let them expire", s.o.maxPending))
		return
	}
	if evict != "" {
		// first make room at the broker, on this caller's turn: the broker
		// never holds more than the cap for this service
		if err := s.spendAtBroker(r.Context(), base, evict, caller); errors.Is(err, errBusy) {
			s.brokerError(w, r, what, base, err)
			return
		}
	}
	c, err := s.brokerAuth(r.Context(), base, clientIP(r), caller)
	if err != nil {
		s.brokerError(w, r, what, base, err)
		return
	}
	s.pending.add(c.Session, caller, base, s.o.now())
	writeJSON(w, http.StatusOK, c)
}

// spendAtBroker uses up an unanswered challenge with an empty attestation,
// so the broker stops counting it against this service (the broker frees
// a challenge when its one attempt is spent, whatever the outcome).
func (s *Server) spendAtBroker(ctx context.Context, base, session, caller string) error {
	if err := s.gate(base).acquire(ctx, caller); err != nil {
		return err
	}
	_, err := s.brokerCall(ctx, base, protocol.PathAttest, session, "", map[string]any{}, nil)
	return err
}

// retryAfter answers a gate refusal.
func retryAfter(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(5))
	writeError(w, http.StatusTooManyRequests, protocol.ErrTooManyRequests, errBusy.Error()+": retry later")
}
