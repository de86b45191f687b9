package wlsclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
)

// Client calls a workload service. Admin calls need an admin key.
type Client struct {
	base  string
	admin ed25519.PrivateKey
	hc    *http.Client
}

// NewClient returns a client for the service at base. admin may be nil
// for host calls.
func NewClient(base string, admin ed25519.PrivateKey, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	return &Client{base: strings.TrimRight(base, "/"), admin: admin, hc: hc}
}

func (c *Client) do(ctx context.Context, method, path string, admin bool, in, out any) error {
	var body io.Reader
	if in != nil {
		b, ok := in.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(in); err != nil {
				return err
			}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", protocol.ContentTypeJSON)
	if admin {
		if c.admin == nil {
			return fmt.Errorf("wls %s %s: no admin key", method, path)
		}
		req.Header.Set("Authorization", "Bearer "+token.SignAdmin(c.admin, "", time.Now(), token.AdminClientTTL))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("wls unreachable: %w", err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+flavor.MaxSignedFlavor))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return protocol.NewBrokerError("wls "+method+" "+path, resp.StatusCode, reply)
	}
	if out != nil {
		if err := json.Unmarshal(reply, out); err != nil {
			return fmt.Errorf("wls %s %s: malformed reply: %w", method, path, err)
		}
	}
	return nil
}

// AddFlavor uploads a signed flavor document and returns its id.
func (c *Client) AddFlavor(ctx context.Context, doc []byte) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	if err := c.do(ctx, http.MethodPost, PathFlavors, true, doc, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// ReplaceFlavor replaces stored flavor id with doc (an explicit, audited
// admin call: AddFlavor is create-only).
func (c *Client) ReplaceFlavor(ctx context.Context, id string, doc []byte) error {
	if !flavor.ValidID(id) {
		return fmt.Errorf("flavor id %q: %w", id, spec.ErrUnsupported)
	}
	return c.do(ctx, http.MethodPut, PathFlavors+"/"+id, true, doc, nil)
}

// AddImage associates image id with flavors.
func (c *Client) AddImage(ctx context.Context, id string, flavorIDs ...string) error {
	return c.do(ctx, http.MethodPost, PathImages, true, Image{ID: id, FlavorIDs: flavorIDs}, nil)
}

// Challenge asks for a broker nonce to attest to for image id's key.
func (c *Client) Challenge(ctx context.Context, id string) (*Challenge, error) {
	var ch Challenge
	if err := c.do(ctx, http.MethodGet, PathImages+"/"+id+FlavorKeySuffix, false, nil, &ch); err != nil {
		return nil, err
	}
	return &ch, nil
}

// FlavorKey answers a challenge and returns the flavor with the wrapped key.
func (c *Client) FlavorKey(ctx context.Context, id string, kr KeyRequest) (*FlavorKey, error) {
	var fk FlavorKey
	if err := c.do(ctx, http.MethodPost, PathImages+"/"+id+FlavorKeySuffix, false, kr, &fk); err != nil {
		return nil, err
	}
	return &fk, nil
}

// KeyChallenge asks for a broker nonce to attest to for the key at keyURL.
func (c *Client) KeyChallenge(ctx context.Context, keyURL string) (*Challenge, error) {
	var ch Challenge
	if err := c.do(ctx, http.MethodPost, PathKeyChallenge, false, KeyURLRequest{KeyURL: keyURL}, &ch); err != nil {
		return nil, err
	}
	return &ch, nil
}

// Key answers a key challenge and returns the wrapped key with the
// broker's transfer proof.
func (c *Client) Key(ctx context.Context, keyURL string, kr KeyRequest) (*ReturnKey, error) {
	var rk ReturnKey
	if err := c.do(ctx, http.MethodPost, PathKeys, false, KeyURLRequest{KeyURL: keyURL, KeyRequest: kr}, &rk); err != nil {
		return nil, err
	}
	return &rk, nil
}

// CheckURL accepts a workload service URL hosts may use: https, or http
// to a loopback address when allowLoopbackHTTP (tests, demos). Plain HTTP
// elsewhere lets any on-path party answer for the service.
func CheckURL(raw string, allowLoopbackHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Errorf("workload service URL %q: want https://HOST[:PORT]: %w", raw, spec.ErrUnsupported)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); allowLoopbackHTTP && (ip != nil && ip.IsLoopback() || u.Hostname() == "localhost") {
			return nil
		}
		return fmt.Errorf("workload service URL %q is plain http: use https (http only to a loopback address with the explicit loopback-http option): %w", raw, spec.ErrUnsupported)
	}
	return fmt.Errorf("workload service URL %q: want https://HOST[:PORT]: %w", raw, spec.ErrUnsupported)
}
