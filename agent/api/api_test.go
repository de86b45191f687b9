package api

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

func serve(t *testing.T, b *kbstest.Broker) *httptest.Server {
	t.Helper()
	c, err := client.New(b.URL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(t, c, evidence.Sample{}))
	t.Cleanup(srv.Close)
	return srv
}

func newHandler(t *testing.T, c *client.Client, att evidence.Attester, opts ...Option) http.Handler {
	t.Helper()
	h, err := NewHandler(c, att, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCDHResource(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("secret-kek"))
	b.AllowAll(t)
	srv := serve(t, b)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/cdh/resource/default/image_key/app", 200, "secret-kek"},
		{"/cdh/resource/default/image_key/missing", 404, "ResourceNotFound"},
		{"/cdh/resource/image_key/app", 200, "secret-kek"}, // two segments: repo "default", as trustee
		{"/cdh/resource/default/%2e%2e/x", 400, "BAD REQUEST"},
		{"/cdh/resource/a/b/c/d", 400, "BAD REQUEST"},
	} {
		status, body := get(t, srv.URL+tc.path)
		if status != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.path, status, body, tc.status, tc.body)
		}
	}
	b.DenyAll(t)
	srv2 := serve(t, b)
	status, body := get(t, srv2.URL+"/cdh/resource/default/image_key/app")
	if status != http.StatusForbidden || !strings.Contains(body, "denied") {
		t.Errorf("denied resource = %d %q, want 403 with the broker's detail", status, body)
	}
}

func TestAAEndpoints(t *testing.T) {
	b := kbstest.New(t)
	srv := serve(t, b)
	status, body := get(t, srv.URL+"/aa/token?token_type=kbs")
	var tok struct{ Token string }
	if status != 200 || json.Unmarshal([]byte(body), &tok) != nil || strings.Count(tok.Token, ".") != 2 {
		t.Errorf("token = %d %q", status, body)
	}
	if status, _ := get(t, srv.URL+"/aa/token?token_type=coco_as"); status != 400 {
		t.Errorf("unsupported token type = %d, want 400", status)
	}
	status, body = get(t, srv.URL+"/aa/evidence?runtime_data=hello")
	var ev struct {
		ReportData string `json:"report_data"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &ev) != nil || ev.ReportData != base64.StdEncoding.EncodeToString([]byte("hello")) {
		t.Errorf("evidence = %d %q", status, body)
	}
	if status, _ := get(t, srv.URL+"/aa/evidence"); status != 400 {
		t.Errorf("evidence without runtime_data = %d, want 400", status)
	}
}

// segmentRE is the broker's rule for a resource path segment (WIRE.md §4).
var segmentRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-\.]*$`)

func FuzzResourcePath(f *testing.F) {
	for _, s := range []string{"default/image_key/app", "image_key/app", "../x/y", "a/b/c/d", "a//b", "a/b/c/", ".a/b/c", "a/b/c..", "%2e%2e/b/c", "a/b/c\\d", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := protocol.ParseResourcePath(s)
		if err != nil {
			return
		}
		for _, seg := range []string{p.Repo, p.Type, p.Tag} {
			if !segmentRE.MatchString(seg) {
				t.Fatalf("protocol.ParseResourcePath(%q) accepted segment %q", s, seg)
			}
		}
		if got := p.String(); got != s && got != "default/"+s {
			t.Fatalf("protocol.ParseResourcePath(%q).String() = %q", s, got)
		}
	})
}

func TestCDHErrors(t *testing.T) {
	// A broker that is not there: 502 naming the cause.
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	c, err := client.New(url, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(t, c, evidence.Sample{}))
	defer srv.Close()
	for _, p := range []string{"/cdh/resource/default/image_key/app", "/aa/token?token_type=kbs"} {
		if status, body := get(t, srv.URL+p); status != http.StatusBadGateway || body == "" {
			t.Errorf("GET %s with the broker down = %d %q, want 502 with a cause", p, status, body)
		}
	}

	// Only GET.
	b := kbstest.New(t)
	srv2 := serve(t, b)
	for _, p := range []string{"/cdh/resource/default/image_key/app", "/aa/token?token_type=kbs", "/aa/evidence?runtime_data=x"} {
		resp, err := http.Post(srv2.URL+p, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodGet {
			t.Errorf("POST %s = %d Allow %q, want 405 Allow GET", p, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if status, _ := get(t, srv2.URL+"/aa/evidence?runtime_data="+strings.Repeat("a", maxRuntimeData+1)); status != http.StatusBadRequest {
		t.Errorf("oversized runtime_data = %d, want 400", status)
	}
}

func TestTokenHasNoPrivateKey(t *testing.T) {
	b := kbstest.New(t)
	srv := serve(t, b)
	status, body := get(t, srv.URL+"/aa/token?token_type=kbs")
	if status != http.StatusOK {
		t.Fatalf("token = %d %q", status, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["tee_keypair"]; ok || strings.Contains(body, "PRIVATE KEY") || len(m) != 1 {
		t.Errorf("token response %q: want only {\"token\"}", body)
	}
}

// TestConcurrentRequestsAttestOnce: the API shares one client, so a burst of
// container requests costs one attestation and everyone gets the secret.
func TestConcurrentRequestsAttestOnce(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("secret-kek"))
	b.AllowAll(t)
	c, err := client.New(b.URL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(t, c, evidence.Sample{}))
	defer srv.Close()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/cdh/resource/default/image_key/app")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != "secret-kek" {
				t.Errorf("GET = %d %q", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	if n := c.Attestations(); n != 1 {
		t.Errorf("attestations = %d, want 1", n)
	}
}
