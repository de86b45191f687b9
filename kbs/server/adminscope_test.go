package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/token"
)

// adminCall makes one admin call with tok and returns the reply.
func adminCall(t *testing.T, b *kbstest.Broker, method, path, body, tok string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, b.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, out, resp.Header}
}

func listPaths(t *testing.T, r reply) []string {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("list: %d %s", r.code, r.body)
	}
	var l protocol.ResourceList
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range l.Resources {
		out = append(out, in.Path)
	}
	return out
}

// TestAttackScopedAdminToken performs what a tenant holding a scoped admin
// token would try: write, delete and read the list of another tenant's
// paths, change policies, widen its own scope. Scopes come from the
// token's allow_paths and from the broker's ACL for its role.
func TestAttackScopedAdminToken(t *testing.T) {
	t.Parallel()
	b := ready(t, server.WithAdminACL(map[string][]string{"tenant-a": {"tenant-a/*/*"}}), server.WithAdminRole("root"))
	b.SetResource(t, "tenant-b/key/k", []byte("b-secret"))
	b.SetResource(t, "tenant-a/key/k", []byte("a-secret"))
	sign := func(role string, allow ...string) string {
		return token.SignAdminClaims(b.AdminKey, token.AdminClaims{Role: role, AllowPaths: allow}, time.Now(), time.Minute)
	}
	scopes := map[string]func() string{
		"allow_paths claim": func() string { return sign("root", "tenant-a/*/*") },
		"role in the ACL":   func() string { return sign("tenant-a") },
	}
	for name, tok := range scopes {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				method, path, body string
				want               int
			}{
				{http.MethodPost, protocol.PathResource + "tenant-b/key/k", "stolen", http.StatusForbidden},
				{http.MethodDelete, protocol.PathResource + "tenant-b/key/k", "", http.StatusForbidden},
				{http.MethodPost, protocol.PathResource + "tenant-b/key/new", "x", http.StatusForbidden},
				{http.MethodPost, protocol.PathResourcePolicy, `{"policy":"` + b64url(policy.ResourceAllowAll) + `"}`, http.StatusForbidden},
				{http.MethodGet, protocol.PathResourcePolicy, "", http.StatusForbidden},
				{http.MethodPost, protocol.PathReferenceValue, string(protocol.NewRVPSMessage("svn", []string{"9"})), http.StatusForbidden},
				{http.MethodPost, protocol.PathResource + "tenant-a/key/new", "mine", http.StatusOK},
			} {
				r := adminCall(t, b, tc.method, tc.path, tc.body, tok())
				if r.code != tc.want {
					t.Errorf("%s %s: got %d %s, want %d", tc.method, tc.path, r.code, r.body, tc.want)
				}
			}
			got := listPaths(t, adminCall(t, b, http.MethodGet, strings.TrimSuffix(protocol.PathResource, "/"), "", tok()))
			for _, p := range got {
				if !strings.HasPrefix(p, "tenant-a/") {
					t.Errorf("scoped list shows %s", p)
				}
			}
			if len(got) == 0 {
				t.Error("scoped list is empty, want tenant-a's resources")
			}
		})
	}
	// The refused calls changed nothing.
	if v, _ := b.Store.Get(context.Background(), protocol.ResourcePath{Repo: "tenant-b", Type: "key", Tag: "k"}); string(v) != "b-secret" {
		t.Fatalf("tenant-b/key/k = %q after the attack", v)
	}
	if strings.Contains(b.Server.Policy().ResourcePolicy(), "allow := true") || b.Server.Policy().ResourcePolicy() == policy.ResourceAllowAll {
		t.Fatal("a scoped token changed the resource policy")
	}
	// A role scoped by the ACL cannot widen itself with allow_paths: both must admit the path.
	r := adminCall(t, b, http.MethodPost, protocol.PathResource+"tenant-b/key/k", "x", sign("tenant-a", "*/*/*"))
	if r.code != http.StatusForbidden {
		t.Fatalf("ACL role widening itself: got %d, want 403", r.code)
	}
	// A role neither required nor in the ACL is refused outright.
	r = adminCall(t, b, http.MethodGet, strings.TrimSuffix(protocol.PathResource, "/"), "", sign("tenant-c"))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAdminAuth, "role")
	// Malformed scopes in a signed token are refused, not ignored.
	r = adminCall(t, b, http.MethodGet, strings.TrimSuffix(protocol.PathResource, "/"), "", sign("root", "tenant-a/["))
	wantError(t, r, http.StatusUnauthorized, protocol.ErrAdminAuth, "allow_paths")
	// The unscoped root token sees everything.
	all := listPaths(t, adminCall(t, b, http.MethodGet, protocol.PathResource, "", sign("root")))
	if strings.Join(all, " ") != "default/image_key/nginx tenant-a/key/k tenant-a/key/new tenant-b/key/k" {
		t.Fatalf("root list: got %v", all)
	}
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestListResourcesNeverValues(t *testing.T) {
	t.Parallel()
	b := ready(t)
	r := adminCall(t, b, http.MethodGet, strings.TrimSuffix(protocol.PathResource, "/"), "", b.AdminToken())
	if r.code != http.StatusOK || strings.Contains(string(r.body), string(secret)) {
		t.Fatalf("list: %d %s", r.code, r.body)
	}
	if got := listPaths(t, r); len(got) != 1 || got[0] != keyPath {
		t.Fatalf("list: got %v, want [%s]", got, keyPath)
	}
	// Without a token the list is refused like any admin call.
	c := newRCAR(t, b.URL)
	wantError(t, c.do(http.MethodGet, protocol.PathResource, nil, nil), http.StatusUnauthorized, protocol.ErrAdminAuth, "Bearer")
}

func TestAdminACLRejectsBadPatterns(t *testing.T) {
	t.Parallel()
	for _, acl := range []map[string][]string{
		{"a": {"tenant-a/*"}}, {"a": {"tenant-a/*/["}}, {"": {"a/b/c"}}, {"a": {}},
	} {
		if _, err := server.New(context.Background(), server.WithAdminACL(acl)); err == nil {
			t.Errorf("WithAdminACL(%v) accepted", acl)
		}
	}
}
