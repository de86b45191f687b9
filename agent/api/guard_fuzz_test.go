package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

// FuzzGuard: whatever Host and Origin a caller sends, a request gets through
// only with a loopback or allowed Host and no foreign Origin.
func FuzzGuard(f *testing.F) {
	for _, seed := range [][2]string{
		{"127.0.0.1:8006", ""}, {"localhost", "http://localhost:8006"}, {"attacker.example", "http://attacker.example"},
		{"[::1]:8006", "null"}, {"127.0.0.1.attacker.example", ""}, {"agent.internal", "https://agent.internal"},
		{"0.0.0.0", ""}, {"LOCALHOST.", "file://"},
	} {
		f.Add(seed[0], seed[1])
	}
	reached := false
	g := &guard{next: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }),
		allowed: map[string]bool{"agent.internal": true}, log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, host, origin string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/aa/token", nil)
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		reached = false
		g.ServeHTTP(httptest.NewRecorder(), req)
		if !reached {
			return
		}
		if name := strings.ToLower(strings.TrimSuffix(hostName(host), ".")); !okName(name) {
			t.Fatalf("Host %q (name %q) got through", host, name)
		}
		if origin != "" && !strings.Contains(strings.ToLower(origin), "localhost") && !strings.Contains(origin, "127.") &&
			!strings.Contains(origin, "::1") && !strings.Contains(strings.ToLower(origin), "agent.internal") {
			t.Fatalf("Origin %q got through", origin)
		}
	})
}

func okName(name string) bool {
	if name == "localhost" || name == "agent.internal" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(name, "[]"))
	return err == nil && a.Unmap().IsLoopback()
}
