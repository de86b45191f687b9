package api

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/kbstest"
)

// countingTransport counts requests the agent's client sends to the broker.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// countingAttester counts evidence produced (for the client's attestation
// and for /aa/evidence).
type countingAttester struct {
	evidence.Sample
	n atomic.Int64
}

func (a *countingAttester) Evidence(ctx context.Context, rd []byte) (json.RawMessage, error) {
	a.n.Add(1)
	return a.Sample.Evidence(ctx, rd)
}

type guarded struct {
	url    string // http://127.0.0.1:port
	port   string
	broker *countingTransport
	att    *countingAttester
}

// calls is how often the broker was asked or evidence produced.
func (g *guarded) calls() int64 { return g.broker.n.Load() + g.att.n.Load() }

// serveGuarded serves the handler, with opts, on a real 127.0.0.1 listener
// in front of a broker holding default/image_key/app = "secret-kek".
func serveGuarded(t *testing.T, opts ...Option) *guarded {
	t.Helper()
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("secret-kek"))
	b.AllowAll(t)
	g := &guarded{broker: &countingTransport{}, att: &countingAttester{}}
	c, err := client.New(b.URL, client.WithAttester(g.att), client.WithHTTPClient(&http.Client{Transport: g.broker}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(t, c, g.att, opts...))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	_, g.port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return g
}

var endpoints = []string{
	"/cdh/resource/default/image_key/app",
	"/aa/token?token_type=kbs",
	"/aa/evidence?runtime_data=attacker-nonce",
}

// getWith sends GET url with the Host and other headers given ("" = unset).
func getWith(t *testing.T, hc *http.Client, url, host string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestDNSRebindingRefused performs the attack: a page on attacker.example,
// whose name now resolves to 127.0.0.1, fetches the agent's endpoints. The
// browser sends Host: attacker.example and Origin: http://attacker.example.
func TestDNSRebindingRefused(t *testing.T) {
	g := serveGuarded(t)
	for _, host := range []string{"attacker.example", "attacker.example:" + g.port} {
		for _, p := range endpoints {
			resp, body := getWith(t, http.DefaultClient, g.url+p, host,
				"Origin", "http://attacker.example", "Sec-Fetch-Site", "cross-site")
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `Host "`+host+`"`) ||
				!strings.Contains(body, "--allowed-host attacker.example") || strings.Count(body, "\n") != 1 {
				t.Errorf("Host %s GET %s = %d %q, want 403 naming the Host and --allowed-host in one line", host, p, resp.StatusCode, body[:min(len(body), 120)])
			}
			if strings.Contains(body, "secret-kek") || strings.Contains(body, "eyJ") || strings.Contains(body, "report_data") {
				t.Errorf("Host %s GET %s leaked %.60q", host, p, body)
			}
		}
	}
	if n := g.calls(); n != 0 {
		t.Fatalf("refused requests reached the broker or attester %d times", n)
	}
}

func TestHostAndOriginChecks(t *testing.T) {
	g := serveGuarded(t, WithAllowedHosts("agent.internal", "10.0.0.5"))
	const res = "/cdh/resource/default/image_key/app"
	refused := []struct {
		name, host string
		hdr        []string
	}{
		{"foreign host, no origin", "attacker.example", nil},
		{"loopback-looking name", "127.0.0.1.attacker.example", nil},
		{"localhost subdomain of attacker", "localhost.attacker.example", nil},
		{"any address", "0.0.0.0:" + g.port, nil},
		{"foreign origin, loopback host", "127.0.0.1:" + g.port, []string{"Origin", "http://attacker.example"}},
		{"foreign origin with port", "localhost", []string{"Origin", "https://attacker.example:8006"}},
		{"null origin", "localhost", []string{"Origin", "null"}},
		{"non-http origin", "localhost", []string{"Origin", "file://localhost"}},
		{"cross-site fetch", "localhost", []string{"Sec-Fetch-Site", "cross-site"}},
		{"allowed host, foreign origin", "agent.internal", []string{"Origin", "http://attacker.example"}},
	}
	for _, tc := range refused {
		resp, body := getWith(t, http.DefaultClient, g.url+res, tc.host, tc.hdr...)
		if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(body, "FORBIDDEN: ") {
			t.Errorf("%s: GET = %d %q, want 403", tc.name, resp.StatusCode, body)
		}
	}
	if n := g.calls(); n != 0 {
		t.Fatalf("refused requests reached the broker or attester %d times", n)
	}
	allowed := []struct {
		name, host string
		hdr        []string
	}{
		{"127.0.0.1 with port", "127.0.0.1:" + g.port, nil},
		{"127.0.0.0/8", "127.3.2.1", nil},
		{"localhost", "localhost:" + g.port, nil},
		{"LOCALHOST.", "LOCALHOST.", nil},
		{"::1", "[::1]:" + g.port, nil},
		{"::1 without port", "[::1]", nil},
		{"configured name", "agent.internal:8006", nil},
		{"configured name, case", "Agent.Internal", nil},
		{"configured address", "10.0.0.5", nil},
		{"loopback origin", "localhost", []string{"Origin", "http://localhost:3000"}},
		{"configured origin", "agent.internal", []string{"Origin", "https://agent.internal"}},
		{"same-origin fetch", "localhost", []string{"Sec-Fetch-Site", "same-origin"}},
	}
	for _, tc := range allowed {
		resp, body := getWith(t, http.DefaultClient, g.url+res, tc.host, tc.hdr...)
		if resp.StatusCode != http.StatusOK || body != "secret-kek" {
			t.Errorf("%s: GET = %d %q, want 200 secret-kek", tc.name, resp.StatusCode, body)
		}
	}
	for _, p := range endpoints[1:] {
		if resp, body := getWith(t, http.DefaultClient, g.url+p, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s from 127.0.0.1 = %d %q, want 200", p, resp.StatusCode, body)
		}
	}
}

// TestNoCORSHeaders: no answer, refused or not, lets a browser page read it.
func TestNoCORSHeaders(t *testing.T) {
	g := serveGuarded(t)
	check := func(what string, resp *http.Response) {
		for k := range resp.Header {
			if strings.HasPrefix(http.CanonicalHeaderKey(k), "Access-Control-") {
				t.Errorf("%s: response has %s", what, k)
			}
		}
	}
	for _, p := range endpoints {
		resp, _ := getWith(t, http.DefaultClient, g.url+p, "")
		check("GET "+p, resp)
		resp, _ = getWith(t, http.DefaultClient, g.url+p, "", "Origin", "http://attacker.example")
		check("cross-origin GET "+p, resp)
	}
	req, _ := http.NewRequest(http.MethodOptions, g.url+endpoints[0], nil)
	req.Header.Set("Origin", "http://attacker.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	check("preflight", resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin preflight = %d, want 403", resp.StatusCode)
	}
}

func TestWithAllowedHostsRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "http://agent.internal", "agent.internal:8006", "*.internal", "agent..internal", "agent/x", "a b"} {
		if _, err := NewHandler(nil, evidence.Sample{}, WithAllowedHosts(name)); err == nil {
			t.Errorf("WithAllowedHosts(%q) accepted", name)
		}
	}
	for _, name := range []string{"agent.internal", "Agent.Internal.", "10.0.0.5", "[fd00::1]", "fd00::1", "coffer-agent"} {
		if _, err := NewHandler(nil, evidence.Sample{}, WithAllowedHosts(name)); err != nil {
			t.Errorf("WithAllowedHosts(%q): %v", name, err)
		}
	}
}
