// Package client is the guest side of the KBS protocol (RCAR 0.4.0): it
// attests to a key broker with an Attester and fetches resources sealed to
// its tee key. One Client caches its token until expiry and runs at most one
// attestation at a time, so a pull attests once however many layers it has.
package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

// Option configures New.
type Option func(*options) error

type options struct {
	attester   evidence.Attester
	keyType    string
	hc         *http.Client
	log        *slog.Logger
	alternates []string
	initData   *protocol.InitData
}

// WithInitData sends the guest's init-data document (TOML, byte for byte
// as delivered) with every attestation, as guest-components' KBS client
// does: the broker checks it against the digest the evidence binds (TDX
// mr_config_id, SNP host_data, TPM PCR 8) and its policy sees the digest
// as the init_data claim. Default: none.
func WithInitData(toml []byte) Option {
	return func(o *options) error {
		o.initData = &protocol.InitData{Format: "toml", Body: string(toml)}
		return nil
	}
}

// WithAlternateURLs names other replicas of the same broker (sharing its
// store and token key). When a step fails because the broker is gone
// (connection refused or reset, 502/503/504), the client repeats the step
// once on the next address: a whole handshake, or a resource GET. Without
// alternates it repeats the step once on the same address after a short
// pause, which a load balancer sends to another replica. Default: none.
func WithAlternateURLs(urls ...string) Option {
	return func(o *options) error {
		for _, u := range urls {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				return fmt.Errorf("alternate broker URL %q: want http(s)://host[:port]", u)
			}
			o.alternates = append(o.alternates, strings.TrimRight(u, "/"))
		}
		return nil
	}
}

// WithAttester sets the evidence source. Default: evidence.Detect() (New fails
// with evidence.ErrNoTEE on a machine without a TEE).
func WithAttester(a evidence.Attester) Option {
	return func(o *options) error { o.attester = a; return nil }
}

// WithTeeKeyType chooses the tee key: "ec" (P-256, default), "rsa" (2048)
// or "mlkem768" (ML-KEM-768, post-quantum: the broker seals resources with
// ML-KEM-768+A192KW as trustee's prototype does).
func WithTeeKeyType(t string) Option {
	return func(o *options) error {
		if t != "ec" && t != "rsa" && t != "mlkem768" {
			return fmt.Errorf("tee key type %q: want ec, rsa or mlkem768", t)
		}
		o.keyType = t
		return nil
	}
}

// WithHTTPClient sets the HTTP client (its Jar is replaced). Default: a
// client with a 30 s timeout.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error { o.hc = hc; return nil }
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) error { o.log = l; return nil } }

// Client talks to one broker.
type Client struct {
	bases    []string     // the broker's addresses, bases[0] the primary
	cur      atomic.Int32 // index of the address in use
	retries  atomic.Int64 // steps repeated after a replica failure
	att      evidence.Attester
	hc       *http.Client
	log      *slog.Logger
	priv     crypto.PrivateKey
	pub      protocol.TeePubKey
	opener   *protocol.Opener
	mu       sync.Mutex // serializes attestation
	token    string
	tokenExp time.Time
	attested int
	initData *protocol.InitData
}

// New returns a client for the broker at baseURL (http://host:port).
func New(baseURL string, opts ...Option) (*Client, error) {
	o := &options{keyType: "ec", log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		if err := f(o); err != nil {
			return nil, err
		}
	}
	if o.attester == nil {
		a, err := evidence.Detect()
		if err != nil {
			return nil, err
		}
		o.attester = a
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if o.hc != nil {
		c := *o.hc
		hc = &c
	}
	jar, _ := cookiejar.New(nil)
	hc.Jar = jar
	c := &Client{bases: append([]string{strings.TrimRight(baseURL, "/")}, o.alternates...), att: o.attester, hc: hc, log: o.log, initData: o.initData}
	var err error
	switch o.keyType {
	case "rsa":
		k, gerr := rsa.GenerateKey(rand.Reader, 2048)
		if gerr != nil {
			return nil, gerr
		}
		c.priv = k
		c.pub, err = protocol.PublicTeeKey(&k.PublicKey)
	case "mlkem768":
		k, gerr := mlkem.GenerateKey768()
		if gerr != nil {
			return nil, gerr
		}
		c.priv = k
		c.pub, err = protocol.PublicTeeKey(k.EncapsulationKey())
	default:
		c.priv, c.pub, err = protocol.GenerateTeeKey()
	}
	if err != nil {
		return nil, err
	}
	if c.opener, err = protocol.NewOpener(c.priv); err != nil {
		return nil, err
	}
	return c, nil
}

// Attestations reports how many attestations this client performed.
func (c *Client) Attestations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attested
}

// Token returns a valid attestation token, attesting if none is cached.
func (c *Client) Token(ctx context.Context) (string, error) {
	return c.tokenFor(ctx, "")
}

// Attest runs a fresh auth/attest handshake and returns the EAR token.
func (c *Client) Attest(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attestLocked(ctx)
}

// tokenFor returns the cached token unless it equals stale (rejected by the
// broker) or is about to expire; then it attests once.
func (c *Client) tokenFor(ctx context.Context, stale string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.token != stale && time.Until(c.tokenExp) > 10*time.Second {
		return c.token, nil
	}
	return c.attestLocked(ctx)
}

func (c *Client) attestLocked(ctx context.Context) (string, error) {
	base := c.base()
	tok, err := c.handshake(ctx, base)
	if err != nil && c.failover(ctx, base, err) {
		tok, err = c.handshake(ctx, c.base())
	}
	return tok, err
}

// base is the address in use.
func (c *Client) base() string { return c.bases[int(c.cur.Load())%len(c.bases)] }

// Retries reports how many steps were repeated after a replica failure.
func (c *Client) Retries() int64 { return c.retries.Load() }

// failover decides whether a step that failed with err against base is
// repeated: only when the broker, not the request, failed. It moves to the
// next address (or, with one address, pauses) and counts the retry.
func (c *Client) failover(ctx context.Context, base string, err error) bool {
	if ctx.Err() != nil || !replicaFailed(err) {
		return false
	}
	c.retries.Add(1)
	if len(c.bases) > 1 {
		for i, b := range c.bases {
			if b == base {
				c.cur.CompareAndSwap(int32(i), int32((i+1)%len(c.bases)))
			}
		}
		c.log.Info("key broker replica failed: repeating the step on another", "failed", base, "next", c.base(), "err", err)
		return true
	}
	c.log.Info("key broker failed: repeating the step once", "kbs", base, "err", err)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(200 * time.Millisecond):
	}
	return true
}

// errUnreachable marks a failed exchange (no HTTP answer).
var errUnreachable = errors.New("key broker unreachable")

// replicaFailed: the broker did not answer, or answered that it cannot
// serve now (its store is down, or a proxy found no replica).
func replicaFailed(err error) bool {
	if errors.Is(err, errUnreachable) {
		return true
	}
	var be *protocol.BrokerError
	if errors.As(err, &be) {
		switch be.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
	}
	return false
}

// handshake runs auth and attest against one address.
func (c *Client) handshake(ctx context.Context, base string) (string, error) {
	var ch protocol.Challenge
	req := protocol.Request{Version: protocol.Version, Tee: protocol.Tee(c.att.Tee()), ExtraParams: json.RawMessage(`""`)}
	hs, twoStep := c.att.(evidence.Handshaker)
	if twoStep {
		p, err := hs.AuthParams(ctx)
		if err != nil {
			return "", err
		}
		req.ExtraParams = p
	}
	if err := c.post(ctx, base, protocol.PathAuth, req, &ch); err != nil {
		return "", fmt.Errorf("kbs auth: %w", err)
	}
	if twoStep {
		if err := hs.Challenge(ctx, ch.ExtraParams); err != nil {
			return "", fmt.Errorf("kbs auth: the broker's challenge: %w", err)
		}
	}
	digest, err := protocol.ReportDataDigest(ch.Nonce, c.pub, "")
	if err != nil {
		return "", err
	}
	ev, err := c.att.Evidence(ctx, digest)
	if err != nil {
		return "", err
	}
	att := protocol.Attestation{
		InitData:    c.initData,
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: c.pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: ev},
	}
	var resp protocol.AttestResponse
	if err := c.post(ctx, base, protocol.PathAttest, att, &resp); err != nil {
		return "", fmt.Errorf("kbs attestation (tee %s): %w", c.att.Tee(), err)
	}
	c.token, c.tokenExp = resp.Token, tokenExpiry(resp.Token)
	c.attested++
	c.log.Info("attested to key broker", "kbs", base, "tee", c.att.Tee())
	return c.token, nil
}

// GetResource fetches repo/typ/tag (Get with the three segments).
func (c *Client) GetResource(ctx context.Context, repo, typ, tag string) ([]byte, error) {
	return c.Get(ctx, resource.Path{Repo: repo, Type: typ, Tag: tag})
}

// Get fetches the resource at p: the client is a resource.Getter, the one
// shape keywrap/aa, imagepolicy and the agent take. It attests when
// needed, and re-attests once when the broker answers 401 to a cached
// token.
func (c *Client) Get(ctx context.Context, p resource.Path) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	tok, err := c.tokenFor(ctx, "")
	if err != nil {
		return nil, err
	}
	base := c.base()
	out, err := c.getResource(ctx, base, p, tok)
	if err != nil && c.failover(ctx, base, err) {
		out, err = c.getResource(ctx, c.base(), p, tok)
	}
	var be *protocol.BrokerError
	if errors.As(err, &be) && be.Retryable() {
		c.log.Info("broker refused the cached token; attesting again", "resource", p.String())
		if tok, err = c.tokenFor(ctx, tok); err != nil {
			return nil, err
		}
		out, err = c.getResource(ctx, c.base(), p, tok)
	}
	if err != nil {
		return nil, fmt.Errorf("kbs resource %s: %w", p, err)
	}
	return out, nil
}

func (c *Client) getResource(ctx context.Context, base string, p protocol.ResourcePath, tok string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+protocol.PathResource+p.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	body, err := c.do(req)
	if err != nil {
		return nil, err
	}
	var r protocol.Response
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("broker response is not a JWE: %w", spec.ErrIntegrity)
	}
	return c.opener.Open(&r)
}

func (c *Client) post(ctx context.Context, base, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", protocol.ContentTypeJSON)
	body, err := c.do(req)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("malformed broker response: %v", err)
	}
	return nil
}

const maxBody = 4 << 20

// maxRetries429 and maxRetryAfter bound how a client waits out a broker's
// per-address rate limit (429 + Retry-After), as when many pods of one node
// start at once.
const (
	maxRetries429 = 3
	maxRetryAfter = 10 * time.Second
)

func (c *Client) do(req *http.Request) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		r, err := c.exchange(req)
		body, retry := r.data, r.retry
		if retry <= 0 || attempt == maxRetries429 || (req.Body != nil && req.GetBody == nil) {
			return body, err
		}
		if req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(retry):
		}
	}
}

// retryAfter reads a 429's Retry-After (seconds): at least 1 ms, at most
// maxRetryAfter; 0 means do not retry.
func retryAfter(resp *http.Response) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests {
		return 0
	}
	secs, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || secs < 0 {
		secs = 1
	}
	d := time.Duration(secs) * time.Second
	if d > maxRetryAfter {
		return 0 // longer than a caller should be kept waiting: report it
	}
	return max(d, time.Millisecond)
}

// reply is one exchange's body, or how long to wait before trying again.
type reply struct {
	data  []byte
	retry time.Duration
}

func (c *Client) exchange(req *http.Request) (reply, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			if req.Context().Err() != nil {
				return reply{}, err
			}
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return reply{}, fmt.Errorf("%w at %s: connection refused", errUnreachable, req.URL.Host)
		}
		return reply{}, fmt.Errorf("%w at %s: %v", errUnreachable, req.URL.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return reply{}, fmt.Errorf("reading broker response: %v", err)
	}
	if len(body) > maxBody {
		return reply{}, fmt.Errorf("broker response over %d bytes", maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		return reply{retry: retryAfter(resp)}, protocol.NewBrokerError("", resp.StatusCode, body)
	}
	return reply{data: body}, nil
}

// tokenExpiry reads exp from a JWT payload without verifying it: it only
// decides when to attest again (the broker verifies the token on use).
func tokenExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp == 0 {
		return time.Time{}
	}
	return time.Unix(claims.Exp, 0)
}

// KeyResolver returns a resolver for kbs:///repo/type/tag key ids, for
// callers that hold kid strings; the Client itself is the resource.Getter
// keywrap/aa's unwrapper and keyprovider handler take.
func (c *Client) KeyResolver() resource.KIDFunc {
	return func(ctx context.Context, kid string) ([]byte, error) {
		p, err := resource.ParseKID(kid)
		if err != nil {
			return nil, err
		}
		return c.Get(ctx, p)
	}
}
