package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
)

const keyPath = "default/image_key/nginx"

var secret = []byte("0123456789abcdef0123456789abcdef")

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func ready(t *testing.T, opts ...server.Option) *kbstest.Broker {
	b := kbstest.New(t, opts...)
	b.SetResource(t, keyPath, secret)
	b.AffirmSample(t)
	return b
}

func wantError(t *testing.T, r reply, code int, variant, detailPart string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status: got %d (%s), want %d", r.code, r.body, code)
	}
	e := r.errInfo(t)
	if e.Variant() != variant || !strings.Contains(e.Detail, detailPart) {
		t.Fatalf("error: got %s %q, want %s containing %q", e.Variant(), e.Detail, variant, detailPart)
	}
}

func TestFlow(t *testing.T) {
	b := ready(t)
	keys := map[string]func(t testing.TB) (any, protocol.TeePubKey){
		"P-256": func(t testing.TB) (any, protocol.TeePubKey) { k, p, _ := protocol.GenerateTeeKey(); return k, p },
		"P-521": func(t testing.TB) (any, protocol.TeePubKey) { return p521TeeKey(t) },
		"RSA":   func(t testing.TB) (any, protocol.TeePubKey) { return rsaTeeKey(t) },
	}
	for name, gen := range keys {
		t.Run(name, func(t *testing.T) {
			priv, pub := gen(t)
			c := newRCARWithKey(t, b.URL, priv, pub)
			tok := c.handshake()
			// Cookie-authenticated GET.
			got, resp, r := c.get(keyPath, "")
			if r.code != http.StatusOK || !bytes.Equal(got, secret) {
				t.Fatalf("cookie GET: %d %s", r.code, r.body)
			}
			// Independent consumer: go-jose decrypts the same response.
			obj, err := jose.ParseEncryptedJSON(string(r.body), []jose.KeyAlgorithm{jose.ECDH_ES_A256KW, jose.RSA_OAEP_256}, []jose.ContentEncryption{jose.A256GCM})
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := obj.Decrypt(priv); err != nil || !bytes.Equal(pt, secret) {
				t.Fatalf("go-jose decrypt: %v", err)
			}
			// The reference client re-serializes the protected header for the AAD.
			raw, _ := base64.RawURLEncoding.DecodeString(resp.Protected)
			var hdr map[string]any
			_ = json.Unmarshal(raw, &hdr)
			alg, enc := hdr["alg"].(string), hdr["enc"].(string)
			delete(hdr, "alg")
			delete(hdr, "enc")
			if again, _ := protocol.SerializeProtectedHeader(alg, enc, hdr); again != resp.Protected {
				t.Fatalf("re-serialized header %s != %s", again, resp.Protected)
			}
			// Bearer GET from a client without the session cookie.
			c2 := newRCARWithKey(t, b.URL, priv, pub)
			got, _, r = c2.get(keyPath, tok)
			if r.code != http.StatusOK || !bytes.Equal(got, secret) {
				t.Fatalf("bearer GET: %d %s", r.code, r.body)
			}
		})
	}
}

func TestBearerVerifiedWhenNotCached(t *testing.T) {
	// A token issued by one broker instance is accepted by another sharing the key.
	signer, _ := token.NewSigner(nil, "", 0)
	b1 := ready(t, server.WithSigner(signer))
	b2 := ready(t, server.WithSigner(signer))
	c := newRCAR(t, b1.URL)
	tok := c.handshake()
	got, _, r := newRCARWithKey(t, b2.URL, c.priv, c.pub).get(keyPath, tok)
	if r.code != http.StatusOK || !bytes.Equal(got, secret) {
		t.Fatalf("GET on second broker: %d %s", r.code, r.body)
	}
}

func TestWrongNonce(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	if _, r := c.auth(protocol.TeeSample); r.code != http.StatusOK {
		t.Fatal(r.code)
	}
	other := base64.StdEncoding.EncodeToString(make([]byte, 32))
	_, r := c.attest(c.attestation(other, c.pub))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "nonce does not match")
}

func TestReplayedNonce(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	if _, r := c.attest(a); r.code != http.StatusOK {
		t.Fatalf("first attest: %d %s", r.code, r.body)
	}
	_, r := c.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "already used")
	// Replaying the captured attestation on a new session fails too.
	c2 := newRCAR(t, b.URL)
	c2.auth(protocol.TeeSample)
	_, r = c2.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "nonce does not match")
	// A wrong nonce also burns the session's one attempt.
	c3 := newRCAR(t, b.URL)
	ch3, _ := c3.auth(protocol.TeeSample)
	c3.attest(c3.attestation("AAAA", c3.pub))
	_, r = c3.attest(c3.attestation(ch3.Nonce, c3.pub))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "already used")
}

func TestExpiredSession(t *testing.T) {
	clk := &clock{t: time.Now()}
	b := ready(t, server.WithClock(clk.now), server.WithSessionTTL(time.Minute))
	c := newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	clk.add(61 * time.Second)
	_, r := c.attest(c.attestation(ch.Nonce, c.pub))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrSessionNotFound, "expired")
	// No cookie at all.
	r = newRCAR(t, b.URL).do(http.MethodPost, protocol.PathAttest, []byte(`{}`), nil)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrSessionNotFound, "no kbs-session-id cookie")
	// Attested session, then expired: GET by cookie fails.
	c = newRCAR(t, b.URL)
	c.handshake()
	clk.add(61 * time.Second)
	_, _, r = c.get(keyPath, "")
	wantError(t, r, http.StatusUnauthorized, protocol.ErrSessionNotFound, "expired")
}

func TestExpiredToken(t *testing.T) {
	clk := &clock{t: time.Now()}
	signer, _ := token.NewSigner(nil, "", time.Minute)
	b := ready(t, server.WithClock(clk.now), server.WithSigner(signer))
	c := newRCAR(t, b.URL)
	tok := c.handshake()
	if _, _, r := c.get(keyPath, tok); r.code != http.StatusOK {
		t.Fatalf("fresh token: %d", r.code)
	}
	clk.add(2 * time.Minute)
	_, _, r := c.get(keyPath, tok)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrTokenInvalid, "expired")
	// Not in the cache (another broker with the same key): the signature
	// check path also enforces expiry.
	b2 := ready(t, server.WithClock(clk.now), server.WithSigner(signer))
	_, _, r = newRCAR(t, b2.URL).get(keyPath, tok)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrTokenInvalid, "expired")
}

func TestTamperedToken(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	tok := c.handshake()
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	// Swap in another tee key: a classic theft attempt.
	_, thief, _ := protocol.GenerateTeeKey()
	var claims map[string]any
	_ = json.Unmarshal(payload, &claims)
	ae := claims["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	ae["runtime_data_claims"].(map[string]any)["tee-pubkey"] = thief
	p2, _ := json.Marshal(claims)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(p2) + "." + parts[2]
	tests := map[string]string{
		"forged claims": forged,
		"bad signature": parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64)),
		"other broker":  newRCAR(t, ready(t).URL).handshake(),
		"garbage":       "not-a-token",
	}
	for name, tk := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, r := newRCAR(t, b.URL).get(keyPath, tk)
			wantError(t, r, http.StatusUnauthorized, protocol.ErrTokenInvalid, "rejected")
		})
	}
	r := c.do(http.MethodGet, protocol.PathResource+keyPath, nil, map[string]string{"Authorization": "Basic abc"})
	wantError(t, r, http.StatusUnauthorized, protocol.ErrTokenInvalid, "not a Bearer")
}

func TestEvidenceBoundToAnotherKey(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	_, other, _ := protocol.GenerateTeeKey()
	_, r := c.attest(c.attestation(ch.Nonce, other))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "does not bind")
	// Additional evidence is part of the binding too.
	c = newRCAR(t, b.URL)
	ch, _ = c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	a.TeeEvidence.AdditionalEvidence = `{"gpu":"x"}`
	_, r = c.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "does not bind")
}

func TestPolicyDeny(t *testing.T) {
	// No reference values: the sample TEE is contraindicated, the default
	// (affirming-only) resource policy denies.
	b := kbstest.New(t)
	b.SetResource(t, keyPath, secret)
	c := newRCAR(t, b.URL)
	tok := c.handshake()
	_, _, r := c.get(keyPath, tok)
	// The denial explains itself: which trust vector, which reference value.
	wantError(t, r, http.StatusUnauthorized, protocol.ErrPolicyDeny,
		"denied by the resource policy (ear.status contraindicated: executables: sample launch_digest abcde is not among reference values launch_digest; hardware: sample svn 1 is not among reference values svn)")
	b.AllowAll(t)
	if _, _, r := c.get(keyPath, tok); r.code != http.StatusOK {
		t.Fatalf("allow-all: %d %s", r.code, r.body)
	}
	b.DenyAll(t)
	_, _, r = c.get(keyPath, tok)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrPolicyDeny, "denied")
	// Path-aware policy.
	b.SetResourcePolicy(t, `package policy
default allow := false
allow if data["resource-path"][2] == "public"`)
	b.SetResource(t, "default/image_key/public", []byte("pub"))
	if got, _, r := c.get("default/image_key/public", tok); r.code != http.StatusOK || string(got) != "pub" {
		t.Fatalf("path policy: %d %s", r.code, r.body)
	}
	_, _, r = c.get(keyPath, tok)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrPolicyDeny, "denied")
}

func TestMissingResource(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	c.handshake()
	_, _, r := c.get("default/image_key/absent", "")
	wantError(t, r, http.StatusUnauthorized, protocol.ErrResourceNotFound, "no resource default/image_key/absent")
}

func TestUnauthenticatedGet(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	_, _, r := c.get(keyPath, "")
	wantError(t, r, http.StatusUnauthorized, protocol.ErrSessionNotFound, "no kbs-session-id")
	c.auth(protocol.TeeSample) // session, not attested
	_, _, r = c.get(keyPath, "")
	wantError(t, r, http.StatusUnauthorized, protocol.ErrSessionNotFound, "not attested")
}

func TestUnknownTee(t *testing.T) {
	b := ready(t)
	for _, tee := range []protocol.Tee{protocol.TeeSGX, "bogus"} {
		_, r := newRCAR(t, b.URL).auth(tee)
		wantError(t, r, http.StatusUnauthorized, protocol.ErrUnsupportedTee, string(tee))
	}
	c := newRCAR(t, b.URL)
	r := c.do(http.MethodPost, protocol.PathAuth, []byte(`{"version":"0.3.0","tee":"sample","extra-params":""}`), nil)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAuthFailed, "0.3.0")
}

func TestChallengeShape(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	_, r := c.auth(protocol.TeeSample)
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	nonce, _ := base64.StdEncoding.DecodeString(m["nonce"].(string))
	if len(nonce) != 32 || m["extra-params"] != "" || len(m) != 2 {
		t.Fatalf("challenge: got %s", r.body)
	}
	ck := r.hdr.Get("Set-Cookie")
	if !strings.HasPrefix(ck, "kbs-session-id=") || !strings.Contains(ck, "Expires=") {
		t.Fatalf("cookie: got %q", ck)
	}
}

func TestPathTraversal(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	tok := c.handshake()
	b.AllowAll(t)
	paths := []string{
		"../../../etc/passwd", "default/image_key/..", "default/../nginx", "%2e%2e/%2e%2e/etc",
		"default/image_key/..%2f..%2fetc", "default/image_key/%2e%2e", "default/image_key/nginx%00",
		"default/image_key/%252e%252e", "default/image_key/nginx/extra", "default//nginx", "default/image_key/.",
		"default%2fimage_key%2fnginx",
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			r := c.do(http.MethodGet, protocol.PathResource+p, nil, map[string]string{"Authorization": "Bearer " + tok})
			wantError(t, r, http.StatusNotFound, protocol.ErrInvalidPath, "invalid resource path")
			r = c.do(http.MethodPost, protocol.PathResource+p, []byte("x"), map[string]string{"Authorization": "Bearer " + b.AdminToken()})
			wantError(t, r, http.StatusBadRequest, protocol.ErrInvalidPath, "invalid resource path")
		})
	}
}

func TestPathTraversalFS(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	fs, err := store.NewFS(repo)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	b := kbstest.New(t, server.WithStore(fs))
	c := newRCAR(t, b.URL)
	admin := func() map[string]string { return map[string]string{"Authorization": "Bearer " + b.AdminToken()} }
	for _, p := range []string{"..%2f..%2fescaped/x/y", "%2e%2e/x/escaped", "a/b/..%2f..%2f..%2fescaped"} {
		r := c.do(http.MethodPost, protocol.PathResource+p, []byte("x"), admin())
		if r.code != http.StatusBadRequest {
			t.Fatalf("%s: got %d", p, r.code)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("files written outside the repository: %v", ents)
	}
	// The legitimate upload lands in <repo>/<repo>/<type>/<tag>, 0600.
	if r := c.do(http.MethodPost, protocol.PathResource+keyPath, secret, admin()); r.code != http.StatusOK {
		t.Fatalf("upload: %d %s", r.code, r.body)
	}
	st, err := os.Stat(filepath.Join(repo, "default", "image_key", "nginx"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stored file: %v %v", st, err)
	}
}

func TestAdminAuth(t *testing.T) {
	clk := &clock{t: time.Now()}
	b := ready(t, server.WithClock(clk.now))
	other := kbstest.New(t)
	c := newRCAR(t, b.URL)
	now := clk.now()
	tests := []struct {
		name   string
		auth   string
		code   int
		detail string
	}{
		{"no token", "", http.StatusUnauthorized, "without a Bearer admin token"},
		{"expired", "Bearer " + token.SignAdmin(b.AdminKey, "", now.Add(-3*time.Hour), 0), http.StatusUnauthorized, "expired"},
		{"not yet valid", "Bearer " + token.SignAdmin(b.AdminKey, "", now.Add(time.Hour), 0), http.StatusUnauthorized, "not valid yet"},
		{"wrong key", "Bearer " + token.SignAdmin(other.AdminKey, "", now, 0), http.StatusUnauthorized, "does not match any admin key"},
		{"attestation token", "Bearer " + c.handshake(), http.StatusUnauthorized, "alg must be EdDSA"},
		{"valid", "Bearer " + token.SignAdmin(b.AdminKey, "", now, 0), http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			r := c.do(http.MethodPost, protocol.PathResource+"default/k/new", []byte("v"), hdr)
			if tt.code == http.StatusOK {
				if r.code != http.StatusOK {
					t.Fatalf("got %d %s", r.code, r.body)
				}
				return
			}
			wantError(t, r, tt.code, protocol.ErrAdminAuth, tt.detail)
			r = c.do(http.MethodGet, protocol.PathResourcePolicy, nil, hdr)
			wantError(t, r, tt.code, protocol.ErrAdminAuth, tt.detail)
		})
	}
	got, _ := b.Store.Get(context.Background(), protocol.ResourcePath{Repo: "default", Type: "k", Tag: "new"})
	if string(got) != "v" {
		t.Fatalf("only the valid call may write: got %q", got)
	}
}

func TestAdminRole(t *testing.T) {
	b := ready(t, server.WithAdminRole("admin"))
	c := newRCAR(t, b.URL)
	r := c.do(http.MethodGet, protocol.PathResourcePolicy, nil, map[string]string{"Authorization": "Bearer " + b.AdminToken()})
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAdminAuth, "role")
	r = c.do(http.MethodGet, protocol.PathResourcePolicy, nil, map[string]string{"Authorization": "Bearer " + token.SignAdmin(b.AdminKey, "admin", time.Now(), 0)})
	if r.code != http.StatusOK {
		t.Fatalf("role admin: %d %s", r.code, r.body)
	}
}

func TestAdminPlainHTTPNonLoopback(t *testing.T) {
	b := ready(t)
	req := httptest.NewRequest(http.MethodGet, protocol.PathResourcePolicy, nil)
	req.RemoteAddr = "192.0.2.7:4000"
	req.Header.Set("Authorization", "Bearer "+b.AdminToken())
	rec := httptest.NewRecorder()
	b.Server.ServeHTTP(rec, req)
	wantError(t, reply{rec.Code, rec.Body.Bytes(), rec.Header()}, http.StatusUnauthorized, protocol.ErrAdminAuth, "plain HTTP")

	var logs bytes.Buffer
	insecure := kbstest.New(t, server.WithInsecureAdmin(true), server.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if !strings.Contains(logs.String(), "INSECURE ADMIN") {
		t.Fatalf("insecure admin not logged loudly: %q", logs.String())
	}
	req = httptest.NewRequest(http.MethodGet, protocol.PathResourcePolicy, nil)
	req.RemoteAddr = "192.0.2.7:4000"
	rec = httptest.NewRecorder()
	insecure.Server.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("insecure admin: %d %s", rec.Code, rec.Body)
	}
}

func TestAdminNoKeyConfigured(t *testing.T) {
	srv, err := server.New(context.Background(), server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	r := newRCAR(t, hs.URL).do(http.MethodGet, protocol.PathResourcePolicy, nil, map[string]string{"Authorization": "Bearer x"})
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAdminAuth, "no admin public key")
}

func TestAdminPolicies(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	admin := func() map[string]string { return map[string]string{"Authorization": "Bearer " + b.AdminToken()} }
	post := func(path string, v any) reply {
		body, _ := json.Marshal(v)
		return c.do(http.MethodPost, path, body, admin())
	}
	enc := base64.RawURLEncoding.EncodeToString
	if r := post(protocol.PathResourcePolicy, map[string]string{"policy": enc([]byte(policy.ResourceAllowAll))}); r.code != http.StatusOK {
		t.Fatalf("set policy: %d %s", r.code, r.body)
	}
	r := post(protocol.PathResourcePolicy, map[string]string{"policy": enc([]byte("package policy\nallow if {"))})
	wantError(t, r, http.StatusBadRequest, protocol.ErrPolicyEngine, "previous policy kept")
	r = c.do(http.MethodGet, protocol.PathResourcePolicy, nil, admin())
	if string(r.body) != policy.ResourceAllowAll {
		t.Fatalf("get policy: got %q", r.body)
	}
	r = post(protocol.PathAttestationPolicy, map[string]string{"type": "rego", "policy_id": "default_cpu", "policy": enc([]byte("package policy\nx if {"))})
	wantError(t, r, http.StatusBadRequest, protocol.ErrPolicyEngine, "previous policy kept")
	r = post(protocol.PathAttestationPolicy, map[string]string{"type": "opa-wasm", "policy": ""})
	wantError(t, r, http.StatusBadRequest, protocol.ErrInvalidRequest, "not supported")
	// An attestation policy that rates everything warning, then a reference value.
	warn := "package policy\n\nhardware := 40\n"
	if r := post(protocol.PathAttestationPolicy, map[string]string{"type": "rego", "policy_id": "mine", "policy": enc([]byte(warn))}); r.code != http.StatusOK {
		t.Fatalf("set attestation policy: %d %s", r.code, r.body)
	}
	tok := newRCAR(t, b.URL).handshake()
	v, err := b.Server.Signer().Verify(tok, time.Now())
	if err != nil || v.Status != token.StatusWarning {
		t.Fatalf("status under custom policy: %+v %v", v, err)
	}
	if !strings.Contains(fmt.Sprint(v.Claims), "ear.appraisal-policy-id:mine") {
		t.Fatalf("policy id missing: %v", v.Claims)
	}
	if r := c.do(http.MethodPost, protocol.PathReferenceValue, protocol.NewRVPSMessage("svn", []string{"7"}), admin()); r.code != http.StatusOK {
		t.Fatalf("reference value: %d %s", r.code, r.body)
	}
	wrapped, _ := json.Marshal(map[string]string{"message": string(protocol.NewRVPSMessage("launch_digest", []string{"x"}))})
	if r := c.do(http.MethodPost, protocol.PathReferenceValue, wrapped, admin()); r.code != http.StatusOK {
		t.Fatalf("wrapped reference value: %d %s", r.code, r.body)
	}
	rv := b.Server.Policy().ReferenceValues()
	if fmt.Sprint(rv["svn"], rv["launch_digest"]) != "[7] [x]" {
		t.Fatalf("reference values: got %v", rv)
	}
	// Delete.
	if r := c.do(http.MethodDelete, protocol.PathResource+keyPath, nil, admin()); r.code != http.StatusOK {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	r = c.do(http.MethodDelete, protocol.PathResource+keyPath, nil, admin())
	wantError(t, r, http.StatusNotFound, protocol.ErrResourceNotFound, "no resource")
}

func TestOversizedBodies(t *testing.T) {
	b := ready(t, server.WithMaxBodyBytes(1024), server.WithMaxResourceBytes(2048))
	c := newRCAR(t, b.URL)
	big := []byte(`{"version":"0.4.0","tee":"sample","extra-params":"` + strings.Repeat("x", 2000) + `"}`)
	r := c.do(http.MethodPost, protocol.PathAuth, big, nil)
	wantError(t, r, http.StatusRequestEntityTooLarge, protocol.ErrPayloadTooLarge, "limit")
	// Without Content-Length (chunked) the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, b.URL+protocol.PathAuth, struct{ *bytes.Reader }{bytes.NewReader(big)})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || req.ContentLength != 0 {
		t.Fatalf("chunked: got %d (content-length %d)", resp.StatusCode, req.ContentLength)
	}
	c.auth(protocol.TeeSample)
	r = c.do(http.MethodPost, protocol.PathAttest, big, nil)
	wantError(t, r, http.StatusRequestEntityTooLarge, protocol.ErrPayloadTooLarge, "limit")
	r = c.do(http.MethodPost, protocol.PathResource+"default/k/big", make([]byte, 4096), map[string]string{"Authorization": "Bearer " + b.AdminToken()})
	wantError(t, r, http.StatusRequestEntityTooLarge, protocol.ErrPayloadTooLarge, "limit")
}

func TestMalformedJSON(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	for _, body := range []string{`{`, `[]`, `{"version":1}`, "\x00", `{"version":"0.4.0","tee":7}`} {
		r := c.do(http.MethodPost, protocol.PathAuth, []byte(body), nil)
		wantError(t, r, http.StatusBadRequest, protocol.ErrInvalidRequest, "malformed JSON")
	}
	c.auth(protocol.TeeSample)
	for _, body := range []string{`{`, `{"runtime-data":7}`, `{"tee-evidence":{"additional_evidence":5}}`} {
		r := c.do(http.MethodPost, protocol.PathAttest, []byte(body), nil)
		wantError(t, r, http.StatusBadRequest, protocol.ErrInvalidRequest, "malformed JSON")
	}
	// Well-formed JSON with a useless tee key.
	c = newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	a.RuntimeData.TeePubKey = protocol.TeePubKey{Kty: "oct"}
	_, r := c.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrTeePubKey, "tee-pubkey unusable")
}

func TestRoutingAndMethods(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	wantError(t, c.do(http.MethodGet, protocol.PathAuth, nil, nil), http.StatusMethodNotAllowed, protocol.ErrInvalidRequest, "not allowed")
	wantError(t, c.do(http.MethodGet, "/kbs/v1/auth", nil, nil), http.StatusNotFound, protocol.ErrInvalidPath, "no endpoint")
	if r := c.do(http.MethodGet, "/healthz", nil, nil); r.code != http.StatusOK || string(r.body) != "ok\n" {
		t.Fatalf("healthz: %d %q", r.code, r.body)
	}
}

func TestMetricsAndAudit(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	b := ready(t, server.WithLogger(slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))))
	c := newRCAR(t, b.URL)
	tok := c.handshake()
	c.get(keyPath, tok)
	b.DenyAll(t)
	c.get(keyPath, tok)
	r := c.do(http.MethodGet, "/metrics", nil, nil)
	for _, want := range []string{
		`kbs_resource_releases_total 1`,
		`kbs_resource_denials_total{reason="policy"} 1`,
		`kbs_attestations_total{status="affirming",tee="sample"} 1`,
		`kbs_http_requests_total{code="200",endpoint="auth"} 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var release, deny int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["msg"] != "kbs audit" {
			continue
		}
		if m["resource"] != keyPath || m["tee"] != "sample" || m["session"] != "bearer" {
			t.Errorf("audit line: %s", line)
		}
		switch m["decision"] {
		case "release":
			release++
		case "deny":
			deny++
		}
	}
	if release != 1 || deny != 1 {
		t.Fatalf("audit lines: %d releases, %d denials; want 1, 1", release, deny)
	}
	if bytes.Contains(logs.Bytes(), secret) || strings.Contains(logs.String(), base64.StdEncoding.EncodeToString(secret)) {
		t.Fatal("key bytes in the logs")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestServeConfigAndShutdown(t *testing.T) {
	dir := t.TempDir()
	privPEM, pubPEM, _ := token.GenerateAdminKey()
	pubFile := filepath.Join(dir, "admin.pub")
	_ = os.WriteFile(pubFile, pubPEM, 0o644)
	cfgFile := filepath.Join(dir, "kbs.toml")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\nrepository = %q\nadmin_public_keys = [%q]\nsession_ttl = \"2m\"\nresource_policy_file = %q\nallow_sample_tee = true\n",
		filepath.Join(dir, "repo"), pubFile, filepath.Join(dir, "allow.rego"))
	_ = os.WriteFile(cfgFile, []byte(cfg), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "allow.rego"), []byte(policy.ResourceAllowAll), 0o644)
	c, err := server.LoadConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionTTL != 2*time.Minute || c.Store != "fs" || len(c.AdminPublicKeys) != 1 {
		t.Fatalf("config: %+v", c)
	}
	// Hand-written key in the repository (seed workflow).
	_ = os.MkdirAll(filepath.Join(dir, "repo", "default", "image_key"), 0o700)
	_ = os.WriteFile(filepath.Join(dir, "repo", "default", "image_key", "nginx"), secret, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	cf := files(t, c)
	go func() {
		done <- server.Serve(ctx, c, cf, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a.String() })
	}()
	addr := <-addrc
	cl := newRCAR(t, "http://"+addr)
	got, _, r := cl.get(keyPath, cl.handshake())
	if r.code != http.StatusOK || !bytes.Equal(got, secret) {
		t.Fatalf("served hand-written key: %d %s", r.code, r.body)
	}
	priv, _ := token.ParseAdminPrivateKey(privPEM)
	r = cl.do(http.MethodGet, protocol.PathResourcePolicy, nil, map[string]string{"Authorization": "Bearer " + token.SignAdmin(priv, "", time.Now(), 0)})
	if r.code != http.StatusOK {
		t.Fatalf("admin with configured key: %d %s", r.code, r.body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no graceful shutdown")
	}
	if _, err := server.LoadConfig(writeFile(t, dir, "bad.toml", "listne = 1\n")); err == nil || !strings.Contains(err.Error(), "unknown keys") {
		t.Fatalf("unknown key: got %v", err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kbs"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile := writeFile(t, dir, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile := writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})))
	c := server.DefaultConfig()
	c.Listen, c.Store, c.TLSCert, c.TLSKey, c.ResourcePolicyFile = "127.0.0.1:0", "memory", certFile, keyFile, writeFile(t, dir, "p.rego", policy.ResourceAllowAll)
	c.AllowSampleTee = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	cf := files(t, c)
	go func() {
		_ = server.Serve(ctx, c, cf, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a.String() })
	}()
	addr := <-addrc
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	cl := newRCAR(t, "https://"+addr)
	cl.hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	_, r := cl.auth(protocol.TeeSample)
	if r.code != http.StatusOK || !strings.Contains(r.hdr.Get("Set-Cookie"), "Secure") {
		t.Fatalf("auth over TLS: %d %q", r.code, r.hdr.Get("Set-Cookie"))
	}
	c.TLSKey = ""
	if err := server.Serve(ctx, c, files(t, c), slog.New(slog.DiscardHandler), nil); err == nil {
		t.Fatal("tls_cert without tls_key accepted")
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	b := kbstest.New(t, server.WithStateDir(dir))
	c := newRCAR(t, b.URL)
	admin := func() map[string]string { return map[string]string{"Authorization": "Bearer " + b.AdminToken()} }
	enc := base64.RawURLEncoding.EncodeToString
	body, _ := json.Marshal(map[string]string{"policy": enc([]byte(policy.ResourceAllowAll))})
	if r := c.do(http.MethodPost, protocol.PathResourcePolicy, body, admin()); r.code != http.StatusOK {
		t.Fatal(r.code)
	}
	body, _ = json.Marshal(map[string]string{"type": "rego", "policy_id": "mine", "policy": enc([]byte("package policy\n\nhardware := 40\n"))})
	if r := c.do(http.MethodPost, protocol.PathAttestationPolicy, body, admin()); r.code != http.StatusOK {
		t.Fatal(r.code)
	}
	if r := c.do(http.MethodPost, protocol.PathReferenceValue, protocol.NewRVPSMessage("svn", []string{"3"}), admin()); r.code != http.StatusOK {
		t.Fatal(r.code)
	}
	st, err := os.Stat(filepath.Join(dir, "resource-policy.rego"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", st, err)
	}
	again := kbstest.New(t, server.WithStateDir(dir))
	e := again.Server.Policy()
	if id, _ := e.AttestationPolicy(); e.ResourcePolicy() != policy.ResourceAllowAll || id != "mine" || fmt.Sprint(e.ReferenceValues()["svn"]) != "[3]" {
		t.Fatalf("restored state: policy %q, attestation %s, refs %v", e.ResourcePolicy(), id, e.ReferenceValues())
	}
	// A corrupt state file stops the broker from starting rather than running with defaults.
	_ = os.WriteFile(filepath.Join(dir, "resource-policy.rego"), []byte("package policy\nallow if {"), 0o600)
	if _, err := server.New(context.Background(), server.WithStateDir(dir), server.WithLogger(slog.New(slog.DiscardHandler))); err == nil {
		t.Fatal("corrupt saved policy accepted")
	}
}

func TestInitDataInToken(t *testing.T) {
	b := ready(t)
	c := newRCAR(t, b.URL)
	ch, _ := c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	body := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = \"x\"\n"
	a.InitData = &protocol.InitData{Format: "toml", Body: body}
	tok, r := c.attest(a)
	if r.code != http.StatusOK {
		t.Fatalf("attest with init-data: %d %s", r.code, r.body)
	}
	v, err := b.Server.Signer().Verify(tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum384([]byte(body))
	ae := v.Claims["submods"].(map[string]any)["cpu0"].(map[string]any)["ear.veraison.annotated-evidence"].(map[string]any)
	if want := base64.StdEncoding.EncodeToString(sum[:]); ae["init_data"] != want || ae["sample"].(map[string]any)["init_data"] != want {
		t.Fatalf("init_data in token: got %v", ae)
	}
	// Malformed init-data is refused.
	c = newRCAR(t, b.URL)
	ch, _ = c.auth(protocol.TeeSample)
	a = c.attestation(ch.Nonce, c.pub)
	a.InitData = &protocol.InitData{Format: "json", Body: "{}"}
	_, r = c.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "init-data format")
}

func TestSessionTableFull(t *testing.T) {
	b := ready(t, server.WithMaxSessions(64))
	var clients []*rcar
	for range 300 {
		c := newRCAR(t, b.URL)
		if _, r := c.auth(protocol.TeeSample); r.code != http.StatusOK {
			t.Fatalf("auth with a full table: %d %s", r.code, r.body)
		}
		clients = append(clients, c)
	}
	// Early sessions were evicted and answer 401 (the client attests again);
	// the newest still work.
	ch, r := clients[0].auth(protocol.TeeSample)
	if r.code != http.StatusOK {
		t.Fatal(r.code)
	}
	if _, r := clients[0].attest(clients[0].attestation(ch.Nonce, clients[0].pub)); r.code != http.StatusOK {
		t.Fatalf("fresh session after evictions: %d %s", r.code, r.body)
	}
	m := clients[0].do(http.MethodGet, "/metrics", nil, nil)
	if !strings.Contains(string(m.body), "kbs_sessions_evicted_total") || strings.Contains(string(m.body), "kbs_sessions_evicted_total 0") {
		t.Fatalf("no evictions counted")
	}
}
