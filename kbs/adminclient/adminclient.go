// Package adminclient calls a key broker's admin API (coffer's or trustee's):
// upload and delete resources, set policies and reference values. Every call
// carries a fresh Ed25519-signed JWT as trustee's kbs-client signs them.
//
//	key, _ := adminclient.LoadKey("admin.key")
//	c, _ := adminclient.New("https://kbs.example:8080", key)
//	err := c.SetResource(ctx, "default/image_key/nginx", kek)
package adminclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

type options struct {
	hc    *http.Client
	role  string
	allow []string
	ttl   time.Duration
	now   func() time.Time
}

// Option configures New.
type Option func(*options) error

// WithHTTPClient sets the HTTP client (TLS roots, proxies). Default: http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error { o.hc = hc; return nil }
}

// WithRole puts a "role" claim in the admin tokens. Default: none.
func WithRole(role string) Option {
	return func(o *options) error { o.role = role; return nil }
}

// WithAllowPaths narrows the admin tokens to resource paths matching
// these patterns (allow_paths claim, e.g. "tenant-a/*/*"). Default: unscoped.
func WithAllowPaths(patterns ...string) Option {
	return func(o *options) error {
		for _, p := range patterns {
			if err := token.ValidatePathPattern(p); err != nil {
				return err
			}
		}
		o.allow = append(o.allow, patterns...)
		return nil
	}
}

// WithTokenTTL sets the lifetime of the admin token signed for each call.
// Default: token.AdminClientTTL.
func WithTokenTTL(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("token ttl %v: must be positive", d)
		}
		o.ttl = d
		return nil
	}
}

// Client calls one broker's admin API.
type Client struct {
	base *url.URL
	key  crypto.Signer // Ed25519: signs a token per call, or
	tok  string        // a token signed elsewhere, sent as is
	o    options
}

// New returns a client for the broker at baseURL (scheme://host[:port])
// that signs a fresh short-lived admin token, with its own jti, per call.
// key is an Ed25519 crypto.Signer: an ed25519.PrivateKey, or a key held in
// a PKCS#11 token (keywrap/pkcs11.NewSigner).
func New(baseURL string, key crypto.Signer, opts ...Option) (*Client, error) {
	if k, ok := key.(ed25519.PrivateKey); key == nil || ok && len(k) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("admin key: not an Ed25519 private key: %w", spec.ErrUnsupported)
	}
	if _, ok := key.Public().(ed25519.PublicKey); !ok {
		return nil, fmt.Errorf("admin key: not an Ed25519 private key: %w", spec.ErrUnsupported)
	}
	c, err := newClient(baseURL, opts)
	if err != nil {
		return nil, err
	}
	c.key = key
	return c, nil
}

// NewWithToken returns a client that sends tok, an admin token signed
// elsewhere (coffer kbs admin-token; e.g. one scoped to a tenant's paths
// with --allow-path), on every call instead of holding the admin key. The
// broker checks it as any admin token: a token with a jti buys one write
// (mint one with --reusable for several), and WithRole, WithAllowPaths and
// WithTokenTTL do not apply (the token carries its own claims).
func NewWithToken(baseURL, tok string, opts ...Option) (*Client, error) {
	tok = strings.TrimSpace(tok)
	if tok == "" || strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("admin token: not a JWT (three dot-separated parts): %w", spec.ErrUnsupported)
	}
	c, err := newClient(baseURL, opts)
	if err != nil {
		return nil, err
	}
	c.tok = tok
	return c, nil
}

func newClient(baseURL string, opts []Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("kbs url %q: want http(s)://host[:port]: %w", baseURL, spec.ErrUnsupported)
	}
	o := options{hc: http.DefaultClient, ttl: token.AdminClientTTL, now: time.Now}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("kbs admin client: %w", err)
		}
	}
	return &Client{base: u, o: o}, nil
}

// LoadKey reads an Ed25519 PKCS#8 PEM private key, as written by
// `openssl genpkey -algorithm ed25519` or `coffer kbs keygen-admin`.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading admin key: %w", err)
	}
	return token.ParseAdminPrivateKey(raw)
}

// Error is a failed admin call: protocol.BrokerError, whose errors.Is maps
// the broker's answer onto spec sentinels (ErrNotFound, ErrExists,
// ErrPolicyDenied, ErrUnsupported).
type Error = protocol.BrokerError

func (c *Client) do(ctx context.Context, method, path, ctype string, body []byte, hdr ...string) ([]byte, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("kbs admin %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	bearer := c.tok
	if bearer == "" {
		if bearer, err = token.SignAdminWith(c.key, token.AdminClaims{Role: c.o.role, AllowPaths: c.o.allow}, c.o.now(), c.o.ttl, false); err != nil {
			return nil, fmt.Errorf("kbs admin %s %s: %w", method, path, err)
		}
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := c.o.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kbs admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("kbs admin %s %s: reading response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, protocol.NewBrokerError("kbs admin "+method+" "+path, resp.StatusCode, out)
	}
	return out, nil
}

func resourcePath(path string) (string, error) {
	p, err := protocol.ParseResourcePath(strings.TrimPrefix(path, "/"))
	if err != nil {
		if kp, kerr := protocol.ParseKID(path); kerr == nil {
			p, err = kp, nil
		}
	}
	if err != nil {
		return "", err
	}
	return protocol.PathResource + p.String(), nil
}

// SetResource uploads data as the resource at path ("repo/type/tag" or
// "kbs:///repo/type/tag"), replacing any previous value.
func (c *Client) SetResource(ctx context.Context, path string, data []byte) error {
	p, err := resourcePath(path)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPost, p, protocol.ContentTypeOctetStream, data)
	return err
}

// CreateResource uploads data as a new resource at path and fails, wrapping
// spec.ErrExists, when the broker already holds one there: the check and the
// write are one atomic step in the broker (If-None-Match: *). A broker that
// ignores If-None-Match (trustee) replaces silently.
func (c *Client) CreateResource(ctx context.Context, path string, data []byte) error {
	p, err := resourcePath(path)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPost, p, protocol.ContentTypeOctetStream, data, "If-None-Match", "*")
	return err
}

// KEKSize is the size of a key-encryption key RegisterKEK generates (AES-256).
const KEKSize = 32

// RegisterKEK generates a fresh 32-byte key-encryption key and stores it in
// the broker at keyID ("repo/type/tag" or "kbs:///repo/type/tag"), then
// returns it with its kid ("kbs:///repo/type/tag") for the
// attestation-agent wrapper. The key exists only in memory and in the
// broker. Unless replace, the write is create-only (CreateResource): an
// existing key, which earlier images need, fails with spec.ErrExists.
func (c *Client) RegisterKEK(ctx context.Context, keyID string, replace bool) (kek []byte, kid string, err error) {
	p, err := resource.ParseKeyID(keyID)
	if err != nil {
		return nil, "", err
	}
	kek = make([]byte, KEKSize)
	if _, err := rand.Read(kek); err != nil {
		return nil, "", err
	}
	store := c.CreateResource
	if replace {
		store = c.SetResource
	}
	if err := store(ctx, p.String(), kek); err != nil {
		clear(kek)
		return nil, "", err
	}
	return kek, "kbs:///" + p.String(), nil
}

// DeleteResource removes the resource at path; a missing one wraps spec.ErrNotFound.
func (c *Client) DeleteResource(ctx context.Context, path string) error {
	p, err := resourcePath(path)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, "", nil)
	return err
}

// SetResourcePolicy installs a Rego resource policy (package policy, allow).
// A policy that does not compile is refused with the compiler's message.
func (c *Client) SetResourcePolicy(ctx context.Context, rego []byte) error {
	body, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString(rego)})
	_, err := c.do(ctx, http.MethodPost, protocol.PathResourcePolicy, protocol.ContentTypeJSON, body)
	return err
}

// GetResourcePolicy returns the Rego source of the resource policy (the
// raw answer body; coffer's broker answers with the policy text).
func (c *Client) GetResourcePolicy(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, protocol.PathResourcePolicy, "", nil)
}

// SetAttestationPolicy installs a Rego attestation policy under id ("" = "default_cpu").
func (c *Client) SetAttestationPolicy(ctx context.Context, id string, rego []byte) error {
	if id == "" {
		id = token.DefaultAppraisalPolicy
	}
	body, _ := json.Marshal(map[string]string{"type": "rego", "policy_id": id, "policy": base64.RawURLEncoding.EncodeToString(rego)})
	_, err := c.do(ctx, http.MethodPost, protocol.PathAttestationPolicy, protocol.ContentTypeJSON, body)
	return err
}

// SetReferenceValue sets the reference values called name (sample RVPS message).
func (c *Client) SetReferenceValue(ctx context.Context, name string, values []string) error {
	if name == "" {
		return fmt.Errorf("reference value without a name: %w", spec.ErrUnsupported)
	}
	_, err := c.do(ctx, http.MethodPost, protocol.PathReferenceValue, protocol.ContentTypeJSON, protocol.NewRVPSMessage(name, values))
	return err
}

// ListResources returns the paths, sizes and modification times of the
// broker's resources (never their values), as far as the token's scope
// reaches. trustee answers the same GET with its own shape.
func (c *Client) ListResources(ctx context.Context) ([]protocol.ResourceInfo, error) {
	out, err := c.do(ctx, http.MethodGet, strings.TrimSuffix(protocol.PathResource, "/"), "", nil)
	if err != nil {
		return nil, err
	}
	var l protocol.ResourceList
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("kbs admin: resource list: %v: %w", err, spec.ErrUnsupported)
	}
	return l.Resources, nil
}
