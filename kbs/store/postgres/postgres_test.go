package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/store/postgres"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
	"github.com/coffer-dev/coffer/kbs/store/storetest"
	"github.com/coffer-dev/coffer/spec"
)

var pg = &postgres.TestPG

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pg)) }

var testKEK = bytes.Repeat([]byte{7}, postgres.KEKSize)

// open migrates a fresh database and opens it.
func open(t *testing.T, kek []byte) (*postgres.Store, string) {
	t.Helper()
	u := pg.Need(t)
	if _, err := postgres.Migrate(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(context.Background(), u, postgres.WithKEK(kek))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, u
}

func TestConformance(t *testing.T) {
	t.Parallel()
	s, _ := open(t, testKEK)
	t.Run("Store", func(t *testing.T) { storetest.Run(t, s) })
	t.Run("Sessions", func(t *testing.T) { storetest.RunSessions(t, s) })
	t.Run("AdminIDs", func(t *testing.T) { storetest.RunAdminIDs(t, s, nil) })
	t.Run("Settings", func(t *testing.T) { storetest.RunSettings(t, s) })
}

func TestMigrateIdempotentAndVersionChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := pg.Need(t)
	_, err := postgres.Open(ctx, u, postgres.WithKEK(testKEK))
	if err == nil || !strings.Contains(err.Error(), "coffer kbs migrate") {
		t.Fatalf("Open unmigrated: got %v, want an error naming coffer kbs migrate", err)
	}
	r, err := postgres.Migrate(ctx, u)
	if err != nil || r.From != 0 || r.To != postgres.SchemaVersion() {
		t.Fatalf("first Migrate: got %+v, %v; want 0 → %d", r, err, postgres.SchemaVersion())
	}
	// Concurrent re-runs (every replica's init container) change nothing.
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			r, err := postgres.Migrate(ctx, u)
			if err == nil && r.From != r.To {
				err = errors.New("second migrate changed the schema")
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// A newer schema (a later coffer migrated) is refused by both.
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO kbs_schema_migrations (version) VALUES ($1)`, postgres.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Open(ctx, u, postgres.WithKEK(testKEK)); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open newer schema: got %v, want a 'newer' error", err)
	}
	if _, err := postgres.Migrate(ctx, u); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Migrate newer schema: got %v, want a 'newer' error", err)
	}
}

// TestDumpLeaksNoKey reads the tables as an attacker with a dump would: the
// resource value and session token appear nowhere, cookies only hashed.
func TestDumpLeaksNoKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, u := open(t, testKEK)
	secret := []byte("SECRET-KEY-MATERIAL-0123456789ab")
	p := store.ResourcePath{Repo: "default", Type: "image_key", Tag: "k"}
	if err := s.Set(ctx, p, secret); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, "COOKIE-VALUE-abcdef", []byte("TOKEN-eyJhbGciOi"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateChallenge(ctx, store.Challenge{ID: "COOKIE-CHALLENGE-xyz", Tee: "tpm", Nonce: "n", Addr: "a", Expires: time.Now().Add(time.Minute)}, 5); err != nil {
		t.Fatal(err)
	}
	var dump []byte
	if pgDump, err := exec.LookPath(filepath.Join(filepath.Dir(pgBin()), "pg_dump")); err == nil {
		out, err := exec.Command(pgDump, "--data-only", u).Output()
		if err != nil {
			t.Fatalf("pg_dump: %v", err)
		}
		dump = out
	} else {
		t.Fatalf("pg_dump not found next to initdb: %v", err)
	}
	if !bytes.Contains(dump, []byte("default/image_key/k")) {
		t.Fatal("dump does not even hold the resource path: the test reads the wrong thing")
	}
	for _, leak := range []string{string(secret), "COOKIE-VALUE", "COOKIE-CHALLENGE", "TOKEN-eyJ"} {
		if bytes.Contains(dump, []byte(leak)) {
			t.Errorf("database dump contains %q", leak)
		}
	}
	// A replica with another KEK says so.
	other, err := postgres.Open(ctx, u, postgres.WithKEK(bytes.Repeat([]byte{8}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Get(ctx, p); !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "store-kek") {
		t.Fatalf("Get with another KEK: got %v, want ErrIntegrity naming --store-kek", err)
	}
	// A ciphertext moved to another row does not authenticate.
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO kbs_resources (path, kek_id, sealed, size) SELECT 'default/image_key/moved', kek_id, sealed, size FROM kbs_resources WHERE path = 'default/image_key/k'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, store.ResourcePath{Repo: "default", Type: "image_key", Tag: "moved"}); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("Get of a moved ciphertext: got %v, want ErrIntegrity", err)
	}
	// A database writer copying an attested session's token onto the
	// session row of a cookie it holds gets nothing usable.
	if err := s.PutSession(ctx, "ATTACKER-COOKIE", []byte("attacker's own token"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE kbs_sessions SET sealed = (SELECT sealed FROM kbs_sessions s2 WHERE s2.id_hash <> kbs_sessions.id_hash LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetSession(ctx, "ATTACKER-COOKIE", time.Now()); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("GetSession of a moved token: got %v, want ErrIntegrity", err)
	}
}

func pgBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) > 0 {
		return dirs[len(dirs)-1]
	}
	p, _ := exec.LookPath("initdb")
	return p
}

func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := open(t, testKEK)
	s.Close()
	p := store.ResourcePath{Repo: "a", Type: "b", Tag: "c"}
	if _, err := s.Get(ctx, p); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Get on a closed pool: got %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping on a closed pool: got %v, want ErrUnavailable", err)
	}
	// Nothing listens on this port.
	_, err := postgres.Open(ctx, "postgres://x@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", postgres.WithKEK(testKEK))
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open unreachable: got %v, want ErrUnavailable", err)
	}
}

func TestURLPasswordNotInErrors(t *testing.T) {
	t.Parallel()
	_, err := postgres.Open(context.Background(), "postgres://kbs:hunter2@127.0.0.1:1/db?sslmode=disable&connect_timeout=1", postgres.WithKEK(testKEK))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v, want an error without the password", err)
	}
	if _, err := postgres.Migrate(context.Background(), "postgres://kbs:hunter2@127.0.0.1:1/db?connect_timeout=1"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Migrate: got %v, want an error without the password", err)
	}
}

func TestParseKEK(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{0xab}, 32)
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"raw", string(raw), true},
		{"hex", strings.Repeat("ab", 32) + "\n", true},
		{"base64", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n", true},
		{"short", "abcd", false},
		{"hex-31", strings.Repeat("ab", 31), false},
	} {
		k, err := postgres.ParseKEK([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && !bytes.Equal(k, raw)) {
			t.Errorf("%s: got %x, %v; want ok=%v", tc.name, k, err, tc.ok)
		}
	}
}

// TestResourceCacheFollowsOtherReplicas: a replica that cached a resource
// serves another replica's change within a second, deletions included.
func TestResourceCacheFollowsOtherReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, u := open(t, testKEK)
	b, err := postgres.Open(ctx, u, postgres.WithKEK(testKEK))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := store.ResourcePath{Repo: "default", Type: "k", Tag: "rotated"}
	if err := a.Set(ctx, p, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	waitFor := func(want string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			got, err := b.Get(ctx, p)
			if (want == "" && errors.Is(err, spec.ErrNotFound)) || (err == nil && string(got) == want) {
				return time.Since(start)
			}
			if time.Since(start) > time.Second {
				t.Fatalf("replica B still answers %q, %v; want %q", got, err, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("v1")
	for range 3 { // served from B's cache now
		if got, _ := b.Get(ctx, p); string(got) != "v1" {
			t.Fatalf("cached Get: %q", got)
		}
	}
	if err := a.Set(ctx, p, []byte("v2")); err != nil {
		t.Fatal(err)
	}
	t.Logf("B served A's update after %v", waitFor("v2"))
	if err := a.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Logf("B saw A's delete after %v", waitFor(""))
	// The writer's own cache is never stale.
	if err := b.Set(ctx, p, []byte("v3")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, p); err != nil || string(got) != "v3" {
		t.Fatalf("read after own write: %q, %v", got, err)
	}
}

func TestExpire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := open(t, testKEK)
	now := time.Now()
	old := now.Add(-time.Minute)
	if err := s.CreateChallenge(ctx, store.Challenge{ID: "old", Tee: "tpm", Nonce: "n", Addr: "a", Expires: old}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateChallenge(ctx, store.Challenge{ID: "live", Tee: "tpm", Nonce: "n", Addr: "a", Expires: now.Add(time.Minute)}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, "old", []byte("t"), old); err != nil {
		t.Fatal(err)
	}
	if err := s.UseAdminID(ctx, "old-jti", old); err != nil {
		t.Fatal(err)
	}
	n, err := s.Expire(ctx, now)
	if err != nil || n != 3 {
		t.Fatalf("Expire: %d rows, %v; want 3", n, err)
	}
	if _, err := s.PeekChallenge(ctx, "live", now); err != nil {
		t.Fatalf("live challenge gone: %v", err)
	}
	// An expired jti may be reused only after it was expired out: its token no longer verifies anyway.
	if err := s.UseAdminID(ctx, "old-jti", now.Add(time.Minute)); err != nil {
		t.Fatalf("expired jti still held: %v", err)
	}
}

// TestRotateKEK moves every resource to a new KEK: replicas with the new
// KEK and the old as previous serve throughout; afterwards the old KEK
// opens nothing and the new one alone serves everything.
func TestRotateKEK(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	oldKEK, newKEK := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	old, u := open(t, oldKEK)
	paths := []store.ResourcePath{{Repo: "a", Type: "k", Tag: "1"}, {Repo: "b", Type: "k", Tag: "2"}}
	for i, p := range paths {
		if err := old.Set(ctx, p, []byte{byte('x' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.PutSession(ctx, "s", []byte("tok"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Without the previous KEK the rotation refuses and changes nothing.
	bare, err := postgres.Open(ctx, u, postgres.WithKEK(newKEK))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if _, err := bare.RotateKEK(ctx); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("rotation without the previous KEK: got %v, want ErrIntegrity", err)
	}
	if got, err := old.Get(ctx, paths[0]); err != nil || string(got) != "x" {
		t.Fatalf("after a refused rotation: %q, %v", got, err)
	}
	next, err := postgres.Open(ctx, u, postgres.WithKEK(newKEK), postgres.WithPreviousKEK(oldKEK))
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if got, err := next.Get(ctx, paths[1]); err != nil || string(got) != "y" {
		t.Fatalf("new KEK with the old as previous, before rotating: %q, %v", got, err)
	}
	res, err := next.RotateKEK(ctx)
	if err != nil || res != (postgres.RotateResult{Resealed: 2, Sessions: 1}) {
		t.Fatalf("RotateKEK: %+v, %v", res, err)
	}
	if res, err := next.RotateKEK(ctx); err != nil || res != (postgres.RotateResult{Current: 2}) {
		t.Fatalf("second RotateKEK: %+v, %v", res, err)
	}
	for i, p := range paths {
		if got, err := bare.Get(ctx, p); err != nil || string(got) != string(rune('x'+i)) {
			t.Fatalf("new KEK alone after rotating, %s: %q, %v", p, got, err)
		}
	}
	fresh, err := postgres.Open(ctx, u, postgres.WithKEK(oldKEK), postgres.WithResourceCache(0))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Get(ctx, paths[0]); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("old KEK after rotating: got %v, want ErrIntegrity", err)
	}
}
