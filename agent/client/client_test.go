package client

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/spec"
)

func newClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, append([]Option{WithAttester(evidence.Sample{})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGetResourceAttestsOnce(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("0123456789abcdef0123456789abcdef"))
	b.SetResource(t, "default/image_key/other", []byte("second"))
	b.AllowAll(t)
	for _, kt := range []string{"ec", "rsa", "mlkem768"} {
		c := newClient(t, b.URL, WithTeeKeyType(kt))
		got, err := c.GetResource(context.Background(), "default", "image_key", "app")
		if err != nil || string(got) != "0123456789abcdef0123456789abcdef" {
			t.Fatalf("%s: GetResource = %q, %v", kt, got, err)
		}
		got, err = c.GetResource(context.Background(), "default", "image_key", "other")
		if err != nil || string(got) != "second" {
			t.Fatalf("%s: second GetResource = %q, %v", kt, got, err)
		}
		if n := c.Attestations(); n != 1 {
			t.Errorf("%s: %d attestations for two resources, want 1", kt, n)
		}
	}
}

func TestResolverResolvesKID(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("kek"))
	b.AllowAll(t)
	got, err := newClient(t, b.URL).KeyResolver()(context.Background(), "kbs:///default/image_key/app")
	if err != nil || !bytes.Equal(got, []byte("kek")) {
		t.Fatalf("resolve = %q, %v", got, err)
	}
}

func TestFailuresMapToSentinels(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("k"))
	b.DenyAll(t)
	c := newClient(t, b.URL)
	_, err := c.GetResource(context.Background(), "default", "image_key", "app")
	if !errors.Is(err, spec.ErrPolicyDenied) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "PolicyDeny") || !strings.Contains(err.Error(), "denied by the resource policy") {
		t.Errorf("deny: err = %v, want ErrPolicyDenied on one line carrying the broker's variant and detail", err)
	}
	if n := c.Attestations(); n != 1 {
		t.Errorf("a denial triggered %d attestations, want 1 (no pointless retry)", n)
	}
	b.AllowAll(t)
	if _, err := c.GetResource(context.Background(), "default", "image_key", "missing"); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("missing: err = %v, want ErrNotFound", err)
	}
	if _, err := c.GetResource(context.Background(), "default", "..", "x"); err == nil {
		t.Error("path traversal accepted by the client")
	}
	dead := newClient(t, "http://127.0.0.1:1")
	if _, err := dead.GetResource(context.Background(), "a", "b", "c"); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("unreachable: err = %v", err)
	}
	if _, err := newClient(t, b.URL, WithAttester(unsupported{})).Attest(context.Background()); err == nil {
		t.Error("attestation with an unknown tee succeeded")
	}
}

type unsupported struct{ evidence.Sample }

func (unsupported) Tee() string { return "nosuchtee" }

func TestRejectedTokenReattestsOnce(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("k"))
	b.AllowAll(t)
	c := newClient(t, b.URL)
	if _, err := c.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.token, c.tokenExp = c.token[:len(c.token)-4]+"AAAA", time.Now().Add(time.Hour) // bad signature
	c.mu.Unlock()
	got, err := c.GetResource(context.Background(), "default", "image_key", "app")
	if err != nil || string(got) != "k" {
		t.Fatalf("after a rejected token: %q, %v", got, err)
	}
	if n := c.Attestations(); n != 2 {
		t.Errorf("attestations = %d, want 2 (one initial, one after the 401)", n)
	}
}

func FuzzTokenExpiry(f *testing.F) {
	f.Add("a.eyJleHAiOjE3MDAwMDAwMDB9.c")
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		_ = tokenExpiry(s)
	})
}

// A broker's per-address rate limit (429 + Retry-After) is waited out, a
// few times at most, instead of failing the pull: pods of one node starting
// together share an address.
func TestWaitsOutRateLimit(t *testing.T) {
	b := kbstest.New(t, server.WithRateLimit(1, 1)) // one /auth or /attest a second
	b.SetResource(t, "default/image_key/app", []byte("k"))
	b.AllowAll(t)
	c := newClient(t, b.URL)
	start := time.Now()
	got, err := c.GetResource(context.Background(), "default", "image_key", "app")
	if err != nil || string(got) != "k" {
		t.Fatalf("GetResource under a 1/s limit: %q, %v", got, err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("auth and attest within %v: the limit did not apply", took)
	}
	// A limit the client will not wait for (Retry-After over 10 s) is reported.
	b2 := kbstest.New(t, server.WithRateLimit(0.01, 1))
	c2 := newClient(t, b2.URL)
	_, err = c2.GetResource(context.Background(), "default", "image_key", "app")
	if err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("GetResource under a 1/100s limit: %v, want the 429 reported", err)
	}
}
