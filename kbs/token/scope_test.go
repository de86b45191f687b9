package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

func TestValidatePathPattern(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p  string
		ok bool
	}{
		{"tenant-a/*/*", true}, {"a/b/c", true}, {"*/image_key/*", true}, {"t[ab]/k/?", true},
		{"tenant-a/*", false}, {"a/b/c/d", false}, {"/b/c", false}, {"a//c", false}, {"a/b/[", false},
		{"", false}, {strings.Repeat("a", 300) + "/b/c", false},
	} {
		if err := ValidatePathPattern(tc.p); (err == nil) != tc.ok {
			t.Errorf("ValidatePathPattern(%q): got %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		pats []string
		p    string
		want bool
	}{
		{[]string{"tenant-a/*/*"}, "tenant-a/key/k", true},
		{[]string{"tenant-a/*/*"}, "tenant-b/key/k", false},
		{[]string{"tenant-a/*/*"}, "tenant-ab/key/k", false},
		{[]string{"tenant-a/*"}, "tenant-a/key/k", false}, // * never crosses /
		{[]string{"x/y/z", "tenant-*/key/*"}, "tenant-q/key/k", true},
		{nil, "a/b/c", false},
	} {
		if got := MatchPath(tc.pats, tc.p); got != tc.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tc.pats, tc.p, got, tc.want)
		}
	}
}

// FuzzAdminScope signs tokens with fuzzed allow_paths: a token VerifyAdmin
// accepts carries only valid, bounded patterns, and MatchPath agrees with
// path.Match; a pattern without metacharacters matches only itself.
func FuzzAdminScope(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(`["tenant-a/*/*"]`, "tenant-a/key/k")
	f.Add(`["a/b/c","x/[y/z"]`, "a/b/c")
	f.Add(`["*/*/*"]`, "../../etc")
	f.Fuzz(func(t *testing.T, allow, p string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		var pats []string
		if json.Unmarshal([]byte(allow), &pats) != nil {
			return
		}
		tok := SignAdminClaims(priv, AdminClaims{AllowPaths: pats}, time.Now(), time.Minute)
		c, err := VerifyAdmin(tok, []ed25519.PublicKey{pub}, AdminCheck{}, time.Now())
		if err != nil {
			return
		}
		if len(c.AllowPaths) > MaxAllowPaths {
			t.Fatalf("accepted %d patterns", len(c.AllowPaths))
		}
		want := false
		for _, pat := range c.AllowPaths {
			if ValidatePathPattern(pat) != nil || strings.Count(pat, "/") != 2 {
				t.Fatalf("accepted invalid pattern %q", pat)
			}
			ok, _ := path.Match(pat, p)
			want = want || ok
			if !strings.ContainsAny(pat, `*?[\`) && ok != (pat == p) {
				t.Fatalf("literal pattern %q vs %q: match %v", pat, p, ok)
			}
		}
		if got := MatchPath(c.AllowPaths, p); got != want {
			t.Fatalf("MatchPath(%q, %q) = %v, want %v", c.AllowPaths, p, got, want)
		}
	})
}
