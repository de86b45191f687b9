package server_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// One state path: on the memory store (a store.Local) and on PostgreSQL
// alike, a malformed /attest body is refused before the challenge is
// spent, so the same cookie then attests; a well-formed attempt spends it
// whatever its outcome.
func TestMalformedAttestKeepsChallengeOnEveryStore(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, base string) {
		c := newRCAR(t, base)
		ch, r := c.auth(protocol.TeeSample)
		if r.code != http.StatusOK {
			t.Fatalf("auth: %d %s", r.code, r.body)
		}
		for _, body := range []string{`{`, `{"runtime-data":7}`} {
			wantError(t, c.do(http.MethodPost, protocol.PathAttest, []byte(body), nil), http.StatusBadRequest, protocol.ErrInvalidRequest, "malformed JSON")
		}
		a := c.attestation(ch.Nonce, c.pub)
		if _, r := c.attest(a); r.code != http.StatusOK {
			t.Fatalf("attest after malformed bodies: %d %s", r.code, r.body)
		}
		if got, _, r := c.get(keyPath, ""); r.code != http.StatusOK || !bytes.Equal(got, secret) {
			t.Fatalf("GET: %d %s", r.code, r.body)
		}
		// A well-formed attempt with a wrong nonce spends the challenge.
		ch, _ = c.auth(protocol.TeeSample)
		bad := c.attestation("wrong", c.pub)
		wantError(t, func() reply { _, r := c.attest(bad); return r }(), http.StatusUnauthorized, protocol.ErrAttestFailed, "nonce")
		_, r = c.attest(c.attestation(ch.Nonce, c.pub))
		wantError(t, r, http.StatusUnauthorized, protocol.ErrAttestFailed, "already used")
	}
	t.Run("memory", func(t *testing.T) { check(t, ready(t).URL) })
	t.Run("postgres", func(t *testing.T) {
		f := newFleet(t, 1, pg.Need(t))
		f.ready()
		check(t, f.urls[0])
	})
}

// A policy set on the engine directly (Server.Policy, as kbstest does)
// holds when the state's settings reload after a change of another
// setting: the broker installs what changed in the state, not all of it.
func TestDirectPolicyHoldsOverStateReload(t *testing.T) {
	t.Parallel()
	b := kbstest.New(t)
	b.SetResourcePolicy(t, policy.ResourceAllowAll)
	c := newRCAR(t, b.URL)
	if r := c.do(http.MethodPost, protocol.PathReferenceValue, protocol.NewRVPSMessage("svn", []string{"3"}), map[string]string{"Authorization": "Bearer " + b.AdminToken()}); r.code != http.StatusOK {
		t.Fatalf("set reference value: %d %s", r.code, r.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(string(c.do(http.MethodGet, "/metrics", nil, nil).body), "kbs_settings_version 1") {
		if time.Now().After(deadline) {
			t.Fatal("the reference value's change was not reloaded from the state")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := b.Server.Policy().ResourcePolicy(); got != policy.ResourceAllowAll {
		t.Fatalf("resource policy after the reload: %q, want the one set on the engine", got)
	}
}
