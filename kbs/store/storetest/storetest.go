// Package storetest is the conformance suite of kbs/store: every store
// (fs, memory, postgres) passes Run, and the store.State a broker keeps
// over each (the postgres store itself; a store.Local over fs and memory)
// passes RunSessions and RunSettings, so a broker behaves the same
// whatever it is given.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/spec"
)

// Run checks s, which must be empty, against the store.Store contract.
func Run(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := func(repo, typ, tag string) store.ResourcePath {
		return store.ResourcePath{Repo: repo, Type: typ, Tag: tag}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		k := p("rt", "image_key", "nginx")
		if _, err := s.Get(ctx, k); !errors.Is(err, spec.ErrNotFound) {
			t.Fatalf("Get missing: got %v, want ErrNotFound", err)
		}
		for _, v := range [][]byte{[]byte("k1"), []byte("key-2"), {}, bytes.Repeat([]byte{0, 0xff}, 4096)} {
			if err := s.Set(ctx, k, v); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Get after Set: got %d bytes, %v; want %d bytes", len(got), err, len(v))
			}
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, spec.ErrNotFound) {
			t.Fatalf("Delete twice: got %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, k); !errors.Is(err, spec.ErrNotFound) {
			t.Fatalf("Get deleted: got %v, want ErrNotFound", err)
		}
	})

	t.Run("CreateNeverReplaces", func(t *testing.T) {
		k := p("cr", "image_key", "a")
		if err := s.Create(ctx, k, []byte("first")); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, k, []byte("second")); !errors.Is(err, spec.ErrExists) {
			t.Fatalf("Create over existing: got %v, want ErrExists", err)
		}
		if got, _ := s.Get(ctx, k); string(got) != "first" {
			t.Fatalf("after refused Create: got %q, want first", got)
		}
		// Concurrent creates: exactly one wins.
		k2 := p("cr", "image_key", "race")
		var wins, exists int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := s.Create(ctx, k2, fmt.Appendf(nil, "v%d", i))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, spec.ErrExists):
					exists++
				default:
					t.Errorf("Create: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || exists != 7 {
			t.Fatalf("concurrent Create: got %d wins %d exists, want 1 and 7", wins, exists)
		}
	})

	t.Run("RejectsBadPaths", func(t *testing.T) {
		for _, k := range []store.ResourcePath{
			p("..", "x", "y"), p("a", "..", "y"), p("a", "b", ".."), p("a", "b", "../../etc/passwd"),
			p("a", "b", "%2e%2e"), p("a", "b", "c/d"), p("", "b", "c"), p("a", "b", ".hidden"), p("a", "b", "c\\d"),
		} {
			if err := s.Set(ctx, k, []byte("x")); !errors.Is(err, spec.ErrUnsupported) {
				t.Errorf("Set %q: got %v, want ErrUnsupported", k, err)
			}
			if _, err := s.Get(ctx, k); !errors.Is(err, spec.ErrUnsupported) {
				t.Errorf("Get %q: got %v, want ErrUnsupported", k, err)
			}
			if err := s.Delete(ctx, k); !errors.Is(err, spec.ErrUnsupported) {
				t.Errorf("Delete %q: got %v, want ErrUnsupported", k, err)
			}
		}
	})

	t.Run("List", func(t *testing.T) {
		before := time.Now().Add(-2 * time.Second)
		want := map[string]int64{"ls/b/x": 3, "ls/a/y": 0, "ls/a/z.1": 5}
		for path, n := range want {
			rp, _ := parse(path)
			if err := s.Set(ctx, rp, bytes.Repeat([]byte("s"), int(n))); err != nil {
				t.Fatal(err)
			}
		}
		infos, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		var order []string
		for _, in := range infos {
			if len(in.Path) > 3 && in.Path[:3] == "ls/" {
				got[in.Path] = in.Size
				order = append(order, in.Path)
				if in.Modified.Before(before) || in.Modified.After(time.Now().Add(2*time.Second)) {
					t.Errorf("%s modified %v, want about now", in.Path, in.Modified)
				}
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("List: got %v, want %v", got, want)
		}
		if wantOrder := []string{"ls/a/y", "ls/a/z.1", "ls/b/x"}; !reflect.DeepEqual(order, wantOrder) {
			t.Fatalf("List order: got %v, want %v", order, wantOrder)
		}
		rp, _ := parse("ls/a/y")
		if err := s.Delete(ctx, rp); err != nil {
			t.Fatal(err)
		}
		infos, _ = s.List(ctx)
		for _, in := range infos {
			if in.Path == "ls/a/y" {
				t.Fatal("deleted resource still listed")
			}
		}
	})
}

func parse(s string) (store.ResourcePath, error) {
	var p store.ResourcePath
	parts := bytes.Split([]byte(s), []byte("/"))
	if len(parts) != 3 {
		return p, errors.New("bad path")
	}
	return store.ResourcePath{Repo: string(parts[0]), Type: string(parts[1]), Tag: string(parts[2])}, nil
}

// RunSessions checks the store.SessionStore contract.
func RunSessions(t *testing.T, s store.SessionStore) {
	ctx := context.Background()
	now := time.Now()
	t.Run("ChallengeSpentOnce", func(t *testing.T) {
		c := store.Challenge{ID: "sess-once", Tee: "sample", Nonce: "n1", Addr: "10.0.0.1", Expires: now.Add(time.Minute)}
		if err := s.CreateChallenge(ctx, c, 10); err != nil {
			t.Fatal(err)
		}
		got, err := s.PeekChallenge(ctx, c.ID, now)
		if err != nil || got.Nonce != "n1" || got.Tee != "sample" || got.Addr != c.Addr || got.Expires.Sub(c.Expires).Abs() > time.Millisecond {
			t.Fatalf("Peek: got %+v, %v; want nonce n1 tee sample", got, err)
		}
		const n = 16
		results := make(chan error, n)
		for range n {
			go func() {
				got, err := s.SpendChallenge(ctx, c.ID, now)
				if err == nil && (got.Nonce != c.Nonce || got.Tee != c.Tee || got.Addr != c.Addr) {
					err = fmt.Errorf("spent challenge %+v, want %+v", got, c)
				}
				results <- err
			}()
		}
		wins, used := 0, 0
		for range n {
			switch err := <-results; {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrChallengeUsed):
				used++
			default:
				t.Errorf("Spend: %v", err)
			}
		}
		if wins != 1 || used != n-1 {
			t.Fatalf("concurrent Spend: got %d wins, %d used; want 1 and %d", wins, used, n-1)
		}
		if _, err := s.PeekChallenge(ctx, c.ID, now); !errors.Is(err, store.ErrChallengeUsed) {
			t.Fatalf("Peek spent: got %v, want ErrChallengeUsed", err)
		}
	})
	t.Run("ChallengeExpiresAndUnknown", func(t *testing.T) {
		c := store.Challenge{ID: "sess-exp", Tee: "tpm", Nonce: "n", Addr: "10.0.0.2", Expires: now.Add(time.Second)}
		if err := s.CreateChallenge(ctx, c, 10); err != nil {
			t.Fatal(err)
		}
		later := now.Add(2 * time.Second)
		if _, err := s.PeekChallenge(ctx, c.ID, later); !errors.Is(err, store.ErrChallengeUnknown) {
			t.Fatalf("Peek expired: got %v, want ErrChallengeUnknown", err)
		}
		if _, err := s.SpendChallenge(ctx, c.ID, later); !errors.Is(err, store.ErrChallengeUnknown) {
			t.Fatalf("Spend expired: got %v, want ErrChallengeUnknown", err)
		}
		if _, err := s.SpendChallenge(ctx, "no-such", now); !errors.Is(err, store.ErrChallengeUnknown) {
			t.Fatalf("Spend unknown: got %v, want ErrChallengeUnknown", err)
		}
	})
	t.Run("PerAddressBound", func(t *testing.T) {
		for i := range 3 {
			err := s.CreateChallenge(ctx, store.Challenge{ID: fmt.Sprintf("pa-%d", i), Tee: "tpm", Nonce: "n", Addr: "10.9.9.9", Expires: now.Add(time.Minute)}, 2)
			if want := i >= 2; (err != nil) != want || (want && !errors.Is(err, store.ErrTooManyPerAddr)) {
				t.Fatalf("challenge %d of max 2: got %v", i, err)
			}
		}
		// A spent challenge no longer counts.
		if _, err := s.SpendChallenge(ctx, "pa-0", now); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateChallenge(ctx, store.Challenge{ID: "pa-3", Tee: "tpm", Nonce: "n", Addr: "10.9.9.9", Expires: now.Add(time.Minute)}, 2); err != nil {
			t.Fatalf("after spending one: %v", err)
		}
	})
	t.Run("Sessions", func(t *testing.T) {
		if _, _, err := s.GetSession(ctx, "nope", now); !errors.Is(err, spec.ErrNotFound) {
			t.Fatalf("GetSession missing: got %v, want ErrNotFound", err)
		}
		exp := now.Add(time.Minute)
		if err := s.PutSession(ctx, "s1", []byte("token-1"), exp); err != nil {
			t.Fatal(err)
		}
		got, gotExp, err := s.GetSession(ctx, "s1", now)
		if err != nil || string(got) != "token-1" || gotExp.Sub(exp).Abs() > time.Millisecond {
			t.Fatalf("GetSession: got %q, %v, %v; want token-1 expiring %v", got, gotExp, err, exp)
		}
		if _, _, err := s.GetSession(ctx, "s1", now.Add(2*time.Minute)); !errors.Is(err, spec.ErrNotFound) {
			t.Fatalf("GetSession expired: got %v, want ErrNotFound", err)
		}
	})
	t.Run("AdminIDOnce", func(t *testing.T) {
		if err := s.UseAdminID(ctx, "jti-1", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.UseAdminID(ctx, "jti-1", now.Add(time.Minute)); !errors.Is(err, spec.ErrExists) {
			t.Fatalf("second use: got %v, want ErrExists", err)
		}
		if err := s.Audit(ctx, store.AuditEvent{Actor: "role=a", Action: "set-resource", Target: "a/b/c", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	})
}

// RunAdminIDs checks the store.AdminIDStore contract: an id is spent once,
// by exactly one of concurrent callers, and (reopen not nil: it opens the
// same store again, as a restarted broker would) stays spent.
func RunAdminIDs(t *testing.T, s store.AdminIDStore, reopen func(t *testing.T) store.AdminIDStore) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	t.Run("Once", func(t *testing.T) {
		if err := s.UseAdminID(ctx, "once-1", exp); err != nil {
			t.Fatal(err)
		}
		if err := s.UseAdminID(ctx, "once-1", exp); !errors.Is(err, spec.ErrExists) {
			t.Fatalf("second use: got %v, want ErrExists", err)
		}
		if err := s.UseAdminID(ctx, "once-2", exp); err != nil {
			t.Fatalf("another id: %v", err)
		}
	})
	t.Run("ConcurrentOnce", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.UseAdminID(ctx, "race-1", exp) }()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, spec.ErrExists):
				t.Errorf("concurrent use: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d of %d concurrent uses of one id succeeded, want 1", won, len(errs))
		}
	})
	if reopen == nil {
		return
	}
	t.Run("SurvivesReopen", func(t *testing.T) {
		if err := s.UseAdminID(ctx, "reopen-1", exp); err != nil {
			t.Fatal(err)
		}
		again := reopen(t)
		if err := again.UseAdminID(ctx, "reopen-1", exp); !errors.Is(err, spec.ErrExists) {
			t.Fatalf("use after reopening: got %v, want ErrExists", err)
		}
		if err := again.UseAdminID(ctx, "reopen-2", exp); err != nil {
			t.Fatalf("a new id after reopening: %v", err)
		}
	})
}

// RunSettings checks the store.SettingsStore contract.
func RunSettings(t *testing.T, s store.SettingsStore) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 16)
	s.Watch(ctx, func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	<-changed // the initial call after connecting
	st, err := s.LoadSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v0 := st.Version
	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change notification after %s", what)
		}
	}
	if err := s.SetResourcePolicy(ctx, "package policy\nallow := true\n"); err != nil {
		t.Fatal(err)
	}
	wait("SetResourcePolicy")
	if err := s.SetAttestationPolicy(ctx, "my_policy", "package policy\n"); err != nil {
		t.Fatal(err)
	}
	wait("SetAttestationPolicy")
	if err := s.SetReferenceValues(ctx, map[string][]any{"a": {"1", "2"}, "b": {}}); err != nil {
		t.Fatal(err)
	}
	wait("SetReferenceValues")
	if err := s.SetReferenceValues(ctx, map[string][]any{"a": {"3"}}); err != nil {
		t.Fatal(err)
	}
	st, err = s.LoadSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Settings{ResourcePolicy: "package policy\nallow := true\n", AttestationPolicyID: "my_policy", AttestationPolicy: "package policy\n",
		ReferenceValues: map[string][]any{"a": {"3"}, "b": {}}, Version: v0 + 4}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("LoadSettings: got %+v, want %+v", st, want)
	}
}
