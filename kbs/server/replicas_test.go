package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store/postgres"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/spec"
)

// pg is started by the first test that needs PostgreSQL.
var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

var fleetKEK = bytes.Repeat([]byte{0x42}, postgres.KEKSize)

// fleet is n broker replicas sharing one PostgreSQL database and token key.
type fleet struct {
	t        testing.TB
	dbURL    string
	urls     []string
	servers  []*server.Server
	https    []*httptest.Server
	adminKey ed25519.PrivateKey
}

func newFleet(t testing.TB, n int, dbURL string, opts ...server.Option) *fleet {
	t.Helper()
	ctx := context.Background()
	if _, err := postgres.Migrate(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tokKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f := &fleet{t: t, dbURL: dbURL, adminKey: priv}
	for range n {
		st, err := postgres.Open(ctx, dbURL, postgres.WithKEK(fleetKEK), postgres.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		signer, err := token.NewSigner(tokKey, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		all := append([]server.Option{
			server.WithStore(st), server.WithSigner(signer), server.WithAdminKeys(pub),
			server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
			server.WithVerifiers(attest.New(attest.Config{AllowSample: true})),
		}, opts...)
		srv, err := server.New(ctx, all...)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		t.Cleanup(func() { hs.Close(); srv.Close(); st.Close() })
		f.urls = append(f.urls, hs.URL)
		f.servers = append(f.servers, srv)
		f.https = append(f.https, hs)
	}
	return f
}

func (f *fleet) admin(i int) *adminclient.Client {
	c, err := adminclient.New(f.urls[i], f.adminKey)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// ready stores the test key and reference values through replica 0 and
// waits until every replica applies them.
func (f *fleet) ready() {
	f.t.Helper()
	ctx := context.Background()
	if err := f.admin(0).SetResource(ctx, keyPath, secret); err != nil {
		f.t.Fatal(err)
	}
	for _, rv := range [][2]string{{"launch_digest", "abcde"}, {"svn", "1"}} {
		if err := f.admin(0).SetReferenceValue(ctx, rv[0], []string{rv[1]}); err != nil {
			f.t.Fatal(err)
		}
	}
	f.waitAll(func(s *server.Server) bool { return len(s.Policy().ReferenceValues()["svn"]) == 1 })
}

// waitAll waits (at most 5 s) until cond holds on every replica and returns how long it took.
func (f *fleet) waitAll(cond func(*server.Server) bool) time.Duration {
	f.t.Helper()
	start := time.Now()
	for _, s := range f.servers {
		for !cond(s) {
			if time.Since(start) > 5*time.Second {
				f.t.Fatal("replicas did not converge within 5 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// TestReplicasHandshakeAcross: auth on A, attest on B, cookie GET on C,
// bearer GET on every replica.
func TestReplicasHandshakeAcross(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3, pg.Need(t))
	f.ready()
	c := newRCAR(t, f.urls[0])
	ch, r := c.auth(protocol.TeeSample)
	if r.code != http.StatusOK {
		t.Fatalf("auth on A: %d %s", r.code, r.body)
	}
	c.base = f.urls[1] // the cookie jar keeps the cookie: cookies ignore ports
	tok, r := c.attest(c.attestation(ch.Nonce, c.pub))
	if r.code != http.StatusOK {
		t.Fatalf("attest on B: %d %s", r.code, r.body)
	}
	c.base = f.urls[2]
	got, _, r := c.get(keyPath, "")
	if r.code != http.StatusOK || !bytes.Equal(got, secret) {
		t.Fatalf("cookie GET on C: %d %s", r.code, r.body)
	}
	for i, u := range f.urls {
		c2 := newRCARWithKey(t, u, c.priv, c.pub) // no cookie
		got, _, r := c2.get(keyPath, tok)
		if r.code != http.StatusOK || !bytes.Equal(got, secret) {
			t.Fatalf("bearer GET on replica %d: %d %s", i, r.code, r.body)
		}
	}
	// An unknown cookie is unknown everywhere.
	c3 := newRCAR(t, f.urls[2])
	if _, _, r := c3.get(keyPath, ""); r.code != http.StatusUnauthorized {
		t.Fatalf("GET without a session: got %d, want 401", r.code)
	}
	// The store's pool and the applied settings version are exported.
	m := c3.do(http.MethodGet, "/metrics", nil, nil)
	for _, want := range []string{"kbs_store_connections_max 16", "kbs_store_connections_idle", "kbs_settings_version 2"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestReplicasNonceReplay: a nonce attested on A cannot be attested again
// on B, and a challenge raced on A and B is won once.
func TestReplicasNonceReplay(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2, pg.Need(t))
	f.ready()
	c := newRCAR(t, f.urls[0])
	ch, _ := c.auth(protocol.TeeSample)
	a := c.attestation(ch.Nonce, c.pub)
	if _, r := c.attest(a); r.code != http.StatusOK {
		t.Fatalf("attest on A: %d %s", r.code, r.body)
	}
	c.base = f.urls[1]
	_, r := c.attest(a)
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "already used")

	// Race: the same challenge sent to A and B at once.
	for round := range 5 {
		c := newRCAR(t, f.urls[0])
		ch, _ := c.auth(protocol.TeeSample)
		a := c.attestation(ch.Nonce, c.pub)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ci := newRCARWithKey(t, f.urls[i], c.priv, c.pub)
				ci.hc.Jar = c.hc.Jar
				_, r := ci.attest(a)
				codes[i] = r.code
			}()
		}
		wg.Wait()
		ok := 0
		for _, code := range codes {
			if code == http.StatusOK {
				ok++
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: challenge raced on A and B: codes %v, want exactly one 200", round, codes)
		}
	}
}

// TestReplicasPolicyPropagation: a resource policy and a reference value
// set through A govern B and C within one second.
func TestReplicasPolicyPropagation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 3, pg.Need(t))
	f.ready()
	c := newRCAR(t, f.urls[0])
	tok := c.handshake()
	for i := range f.urls {
		c.base = f.urls[i]
		if _, _, r := c.get(keyPath, tok); r.code != http.StatusOK {
			t.Fatalf("GET before the change on %d: %d %s", i, r.code, r.body)
		}
	}
	// Deny everything through A; B and C must refuse within 1 s.
	start := time.Now()
	if err := f.admin(0).SetResourcePolicy(ctx, []byte(policy.ResourceDenyAll)); err != nil {
		t.Fatal(err)
	}
	acked := time.Since(start)
	for _, i := range []int{1, 2} {
		c.base = f.urls[i]
		for {
			_, _, r := c.get(keyPath, tok)
			if r.code == http.StatusUnauthorized {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("replica %d still releases 1 s after the deny-all policy was set on A", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Logf("resource policy set on A (acknowledged after %v) governed B and C after %v", acked, time.Since(start))

	// A reference value set through A (svn 2) makes the sample TEE no
	// longer affirming on C: the default attestation policy reads it.
	if err := f.admin(0).SetResourcePolicy(ctx, []byte(policy.ResourceAffirming)); err != nil {
		t.Fatal(err)
	}
	if err := f.admin(0).SetReferenceValue(ctx, "svn", []string{"2"}); err != nil {
		t.Fatal(err)
	}
	d := f.waitAll(func(s *server.Server) bool {
		v := s.Policy().ReferenceValues()["svn"]
		return len(v) == 1 && v[0] == "2"
	})
	if d > time.Second {
		t.Fatalf("reference value reached every replica after %v, want < 1 s", d)
	}
	t.Logf("reference value set on A reached B and C after %v", d)
	c2 := newRCAR(t, f.urls[2])
	tok2 := c2.handshake()
	if _, _, r := c2.get(keyPath, tok2); r.code != http.StatusUnauthorized {
		t.Fatalf("GET on C with svn 1 evidence after svn 2 was set on A: got %d, want 401", r.code)
	}
}

// TestReplicasAdminTokenOnce: an admin token used for a write on A cannot
// write again on B.
func TestReplicasAdminTokenOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2, pg.Need(t))
	tok := token.SignAdmin(f.adminKey, "", time.Now(), time.Minute)
	post := func(u string) int {
		req, _ := http.NewRequest(http.MethodPost, u+protocol.PathResource+"default/k/a", strings.NewReader("v"))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(f.urls[0]); got != http.StatusOK {
		t.Fatalf("first write on A: %d", got)
	}
	if got := post(f.urls[1]); got != http.StatusUnauthorized {
		t.Fatalf("replayed write on B: got %d, want 401", got)
	}
}

// TestReplicasListAndScopedAdmin: the list shows what any replica stored;
// a token scoped to tenant-a/* can neither write tenant-b nor see it.
func TestReplicasListAndScopedAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 2, pg.Need(t))
	if err := f.admin(0).SetResource(ctx, "tenant-a/key/one", []byte("a1")); err != nil {
		t.Fatal(err)
	}
	if err := f.admin(1).SetResource(ctx, "tenant-b/key/one", []byte("b11")); err != nil {
		t.Fatal(err)
	}
	list, err := f.admin(1).ListResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Path != "tenant-a/key/one" || list[0].Size != 2 || list[1].Path != "tenant-b/key/one" || list[1].Size != 3 {
		t.Fatalf("list: got %+v", list)
	}
	scoped, err := adminclient.New(f.urls[1], f.adminKey, adminclient.WithAllowPaths("tenant-a/*/*"))
	if err != nil {
		t.Fatal(err)
	}
	if err := scoped.SetResource(ctx, "tenant-b/key/one", []byte("stolen")); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("scoped write to tenant-b: got %v, want ErrPolicyDenied", err)
	}
	if got, _ := f.servers[0].Store().Get(ctx, protocol.ResourcePath{Repo: "tenant-b", Type: "key", Tag: "one"}); string(got) != "b11" {
		t.Fatalf("tenant-b after the refused write: %q", got)
	}
	list, err = scoped.ListResources(ctx)
	if err != nil || len(list) != 1 || list[0].Path != "tenant-a/key/one" {
		t.Fatalf("scoped list: got %+v, %v; want only tenant-a", list, err)
	}
	// Both writes and the refused one are in the shared audit log, newest first.
	log, err := f.servers[0].Store().(*postgres.Store).AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		got = append(got, e.Action+" "+e.Target+" "+e.Result)
		if !strings.Contains(e.Actor, "jti=") {
			t.Errorf("audit actor %q names no token", e.Actor)
		}
	}
	want := []string{
		"POST /kbs/v0/resource/tenant-b/key/one 403",
		"POST /kbs/v0/resource/tenant-b/key/one 200",
		"POST /kbs/v0/resource/tenant-a/key/one 200",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestAttackCookieFloodOnReplica: GETs with cookies a replica does not hold
// cost database reads, so malformed ones are refused without one and
// well-formed ones count against the per-address rate limit.
func TestAttackCookieFloodOnReplica(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1, pg.Need(t), server.WithRateLimit(5, 5))
	f.ready()
	c := newRCAR(t, f.urls[0])
	get := func(cookie string) reply {
		return c.do(http.MethodGet, protocol.PathResource+keyPath, nil, map[string]string{"Cookie": protocol.SessionCookie + "=" + cookie})
	}
	for range 50 {
		if r := get("not-a-session-id"); r.code != http.StatusUnauthorized {
			t.Fatalf("malformed cookie: got %d, want 401", r.code)
		}
	}
	limited := 0
	for i := range 20 {
		if r := get(fmt.Sprintf("%032x", i)); r.code == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 10 {
		t.Fatalf("20 unknown well-formed cookies from one address: %d rate-limited, want most", limited)
	}
}
