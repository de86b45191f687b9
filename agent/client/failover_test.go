package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/coffer-dev/coffer/kbs/kbstest"
)

func TestFailover(t *testing.T) {
	t.Parallel()
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("k"))
	b.AllowAll(t)
	// A front that answers 503 to its first n calls, then passes through.
	flaky := func(n int64, status int) (*httptest.Server, *atomic.Int64) {
		var calls atomic.Int64
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) <= n {
				w.WriteHeader(status)
				return
			}
			b.Server.ServeHTTP(w, r)
		}))
		t.Cleanup(hs.Close)
		return hs, &calls
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	unavailable, _ := flaky(1, http.StatusServiceUnavailable)
	alwaysDown, _ := flaky(1<<40, http.StatusServiceUnavailable)
	for _, tc := range []struct {
		name        string
		urls        []string
		ok          bool
		wantRetries int64
	}{
		{"primary dead, alternate up", []string{dead.URL, b.URL}, true, 1},
		{"one 503 on the only address", []string{unavailable.URL}, true, 1},
		{"healthy", []string{b.URL, dead.URL}, true, 0},
		{"every replica failing: one retry, then the error", []string{alwaysDown.URL, dead.URL}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.urls[0], WithAlternateURLs(tc.urls[1:]...))
			got, err := c.GetResource(context.Background(), "default", "image_key", "app")
			if (err == nil) != tc.ok || (tc.ok && string(got) != "k") {
				t.Fatalf("GetResource = %q, %v; want ok=%v", got, err, tc.ok)
			}
			if c.Retries() != tc.wantRetries {
				t.Fatalf("retries: got %d, want %d", c.Retries(), tc.wantRetries)
			}
		})
	}
	// A refusal is the broker's answer, not a failure: no retry.
	c := newClient(t, b.URL, WithAlternateURLs(dead.URL))
	if _, err := c.GetResource(context.Background(), "default", "image_key", "missing"); err == nil || c.Retries() != 0 {
		t.Fatalf("missing resource: err %v, %d retries; want an error and no retry", err, c.Retries())
	}
	if _, err := New(b.URL, WithAlternateURLs("ftp://x")); err == nil {
		t.Fatal("a non-http alternate URL was accepted")
	}
}
