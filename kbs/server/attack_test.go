package server_test

// Regression tests for the broker findings of the adversarial review
// (issue 12): each performs the attack and checks the broker's answer.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
)

// Finding 1: init-data nested 16k deep (64 KiB) inside an attestation whose
// sample evidence is otherwise valid. Before: 76 s of CPU and GiBs of heap,
// continuing after the client left. Now: a 4xx in well under 100 ms, and
// the heap does not grow.
func TestAttackNestedInitData(t *testing.T) {
	b := ready(t)
	n := 16 << 10
	bomb := "algorithm = \"sha384\"\n[data]\nx = " + strings.Repeat("{a=", n) + "1" + strings.Repeat("}", n) + "\n"
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	a.InitData = &protocol.InitData{Format: "toml", Body: bomb}
	start := time.Now()
	_, r := c.attest(a)
	took := time.Since(start)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "nested more than")
	if took > 100*time.Millisecond {
		t.Errorf("nested init-data answered in %v, want < 100ms", took)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.TotalAlloc - before.TotalAlloc); grew > 64<<20 {
		t.Errorf("the request allocated %d MiB", grew>>20)
	}
}

// Finding 2: a 900 KiB svn in sample evidence became a 1.2 MB token kept in
// two caches. Every claim now has a bound, and the token as a whole too.
func TestAttackOversizedClaims(t *testing.T) {
	b := ready(t)
	big := strings.Repeat("9", 900<<10)

	c := newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	d, _ := protocol.ReportDataDigest(ch.Nonce, c.pub, "")
	a.TeeEvidence.PrimaryEvidence, _ = json.Marshal(map[string]string{"svn": big, "report_data": base64.StdEncoding.EncodeToString(d)})
	tok, r := c.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "svn")
	if tok != "" {
		t.Fatal("token issued")
	}

	// A tee key padded with 600 KiB of leading zero bytes is still a
	// 2048-bit RSA key, but it would be copied into the token.
	priv, pub := rsaTeeKey(t)
	raw, _ := base64.RawURLEncoding.DecodeString(pub.N)
	pub.N = base64.RawURLEncoding.EncodeToString(append(make([]byte, 600<<10), raw...))
	c = newRCARWithKey(t, b.URL, priv, pub)
	ch, _ = c.auth(protocol.TeeSample)
	_, r = c.attest(c.attestation(ch.Nonce, c.pub))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "exceed the broker's limit")
}

// serve sends one request straight to the handler from addr.
func serve(s http.Handler, method, path, addr string, body []byte, cookie *http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.RemoteAddr = addr
	if cookie != nil {
		req.AddCookie(cookie)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

var authBody = []byte(`{"version":"0.4.0","tee":"sample","extra-params":""}`)

// Finding 7: 400k unauthenticated /auth calls evicted attested sessions.
// Challenges now live apart from attested sessions: a flood from many
// addresses (here 20× the table size) leaves the victim's session intact.
func TestAttackAuthFloodKeepsAttestedSessions(t *testing.T) {
	b := ready(t, server.WithMaxSessions(64))
	victim := newRCAR(t, b.URL)
	victim.handshake()
	for i := range 64 * 20 {
		rec := serve(b.Server, http.MethodPost, protocol.PathAuth, fmt.Sprintf("10.%d.%d.1:4000", i/250, i%250), authBody, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("flood auth %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if pt, _, r := victim.get(keyPath, ""); r.code != http.StatusOK || string(pt) != string(secret) {
		t.Fatalf("victim's attested session after the flood: %d %s", r.code, r.body)
	}
}

// Finding 7, per address: one address may hold only so many challenges;
// others are unaffected, and attesting frees a slot.
func TestAttackAuthFloodPerAddress(t *testing.T) {
	b := ready(t, server.WithMaxChallengesPerAddress(8))
	var last *http.Cookie
	for i := range 8 {
		rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "192.0.2.7:1000", authBody, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("auth %d: %d", i, rec.Code)
		}
		last = rec.Result().Cookies()[0]
	}
	rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "192.0.2.7:1001", authBody, nil)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "too many outstanding challenges") {
		t.Fatalf("9th challenge from one address: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "198.51.100.1:1000", authBody, nil); rec.Code != http.StatusOK {
		t.Fatalf("another address: %d", rec.Code)
	}
	// Spending a challenge (even with a wrong nonce) frees its slot.
	serve(b.Server, http.MethodPost, protocol.PathAttest, "192.0.2.7:1000", []byte(`{"runtime-data":{"nonce":"x"}}`), last)
	if rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "192.0.2.7:1000", authBody, nil); rec.Code != http.StatusOK {
		t.Fatalf("after spending one: %d %s", rec.Code, rec.Body)
	}
	// IPv6 clients are counted by their /64.
	for i := range 9 {
		rec := serve(b.Server, http.MethodPost, protocol.PathAuth, fmt.Sprintf("[2001:db8::%x]:1000", i+1), authBody, nil)
		if want := http.StatusOK; i == 8 {
			want = http.StatusTooManyRequests
			if rec.Code != want {
				t.Fatalf("9th challenge from one /64: %d", rec.Code)
			}
		} else if rec.Code != want {
			t.Fatalf("challenge %d from the /64: %d", i, rec.Code)
		}
	}
}

// Finding 7, rate: /auth and /attest are limited per address when configured.
func TestAttackRateLimit(t *testing.T) {
	clk := &clock{t: time.Now()}
	b := ready(t, server.WithRateLimit(2, 5), server.WithClock(clk.now))
	for i := range 5 {
		if rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "192.0.2.9:1", authBody, nil); rec.Code != http.StatusOK {
			t.Fatalf("auth %d within the burst: %d", i, rec.Code)
		}
	}
	rec := serve(b.Server, http.MethodPost, protocol.PathAttest, "192.0.2.9:1", []byte(`{}`), nil)
	wantError(t, reply{rec.Code, rec.Body.Bytes(), rec.Header()}, http.StatusTooManyRequests, protocol.ErrTooManyRequests, "retry later")
	if rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
	}
	if rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "192.0.2.10:1", authBody, nil); rec.Code != http.StatusOK {
		t.Fatalf("another address: %d", rec.Code)
	}
	clk.add(time.Second)
	if rec := serve(b.Server, http.MethodPost, protocol.PathAuth, "192.0.2.9:1", authBody, nil); rec.Code != http.StatusOK {
		t.Fatalf("after a second: %d", rec.Code)
	}
	if m := serve(b.Server, http.MethodGet, "/metrics", "127.0.0.1:1", nil, nil); !strings.Contains(m.Body.String(), "kbs_rate_limited_total 1") {
		t.Fatal("kbs_rate_limited_total not counted")
	}
}

// signClaims signs arbitrary admin-token claims as kbs-client would.
func signClaims(key ed25519.PrivateKey, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(`{"alg":"EdDSA","typ":"JWT"}`)) + "." + enc([]byte(claims))
	return signing + "." + enc(ed25519.Sign(key, []byte(signing)))
}

// Finding 8: {"exp":16725225600} (year 2500, no iat) was accepted, and one
// token could be replayed forever. iat and exp are now required, the
// lifetime is capped, and a token's jti buys one write.
func TestAttackAdminTokenLifetime(t *testing.T) {
	clk := &clock{t: time.Now()}
	b := ready(t, server.WithClock(clk.now), server.WithAdminTokenMaxTTL(15*time.Minute))
	c := newRCAR(t, b.URL)
	now := clk.now().Unix()
	body, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(policy.ResourceAllowAll))})
	post := func(tok string) reply {
		return c.do(http.MethodPost, protocol.PathResourcePolicy, body, map[string]string{"Authorization": "Bearer " + tok})
	}
	for name, tc := range map[string]struct{ claims, detail string }{
		"year 2500, no iat": {`{"exp":16725225600}`, "without iat and exp"},
		"no exp":            {fmt.Sprintf(`{"iat":%d}`, now), "without iat and exp"},
		"one day":           {fmt.Sprintf(`{"iat":%d,"nbf":%d,"exp":%d}`, now, now, now+86400), "lifetime"},
		"16 minutes":        {fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now+960), "lifetime"},
		"exp before iat":    {fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now-1), "lifetime"},
		"iat in the future": {fmt.Sprintf(`{"iat":%d,"exp":%d}`, now+600, now+900), "issued in the future"},
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, post(signClaims(b.AdminKey, tc.claims)), http.StatusUnauthorized, protocol.ErrAdminAuth, tc.detail)
		})
	}
	// A kbs-client-shaped token (no jti) within the cap works, and works again.
	ok := signClaims(b.AdminKey, fmt.Sprintf(`{"iat":%d,"nbf":%d,"exp":%d}`, now, now, now+900))
	for i := range 2 {
		if r := post(ok); r.code != http.StatusOK {
			t.Fatalf("kbs-client token, call %d: %d %s", i, r.code, r.body)
		}
	}
	// A token with a jti buys one write; reads are not counted.
	once := signClaims(b.AdminKey, fmt.Sprintf(`{"iat":%d,"exp":%d,"jti":"abc"}`, now, now+900))
	if r := post(once); r.code != http.StatusOK {
		t.Fatalf("first write: %d %s", r.code, r.body)
	}
	wantError(t, post(once), http.StatusUnauthorized, protocol.ErrAdminAuth, "jti replay")
	get := func(tok string) reply {
		return c.do(http.MethodGet, protocol.PathResourcePolicy, nil, map[string]string{"Authorization": "Bearer " + tok})
	}
	read := signClaims(b.AdminKey, fmt.Sprintf(`{"iat":%d,"exp":%d,"jti":"r"}`, now, now+900))
	for i := range 2 {
		if get(read).code != http.StatusOK {
			t.Fatalf("a jti token could not read twice: read %d refused", i+1)
		}
	}
	// And the lifetime bound expires tokens as usual.
	clk.add(16 * time.Minute)
	wantError(t, post(ok), http.StatusUnauthorized, protocol.ErrAdminAuth, "expired")
}

// Finding 6, broker side: If-None-Match: * makes a resource write create-only.
func TestAttackCreateOnlyResource(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	put := func(v string, createOnly bool) reply {
		h := map[string]string{"Authorization": "Bearer " + b.AdminToken()}
		if createOnly {
			h["If-None-Match"] = "*"
		}
		return c.do(http.MethodPost, protocol.PathResource+"default/image_key/new", []byte(v), h)
	}
	if r := put("first-key-first-key-first-key-32", true); r.code != http.StatusOK {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	wantError(t, put("second", true), http.StatusPreconditionFailed, protocol.ErrResourceExists, "already exists")
	got, err := b.Store.Get(t.Context(), protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "new"})
	if err != nil || string(got) != "first-key-first-key-first-key-32" {
		t.Fatalf("stored after a refused create: %q %v", got, err)
	}
	if r := put("third", false); r.code != http.StatusOK {
		t.Fatalf("plain set still replaces: %d", r.code)
	}
}

// The sample TEE has no root of trust: a broker refuses it unless told to
// accept it (issue 7), with a PolicyDeny a client maps to exit code 5.
func TestSampleRefusedByDefault(t *testing.T) {
	s, err := server.New(t.Context(), server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(s, http.MethodPost, protocol.PathAuth, "127.0.0.1:1", authBody, nil)
	wantError(t, reply{rec.Code, rec.Body.Bytes(), rec.Header()}, http.StatusUnauthorized, protocol.ErrPolicyDeny, "--allow-sample-tee")
}
