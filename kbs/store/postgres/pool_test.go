package postgres

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
)

// TestPG is the test binary's PostgreSQL, shared with the external tests
// (package postgres_test), whose TestMain stops it.
var TestPG pgtest.Shared

// TestPoolSettings checks that the pool bound, the statement timeout and
// the URL's sslmode reach the connections.
func TestPoolSettings(t *testing.T) {
	ctx := context.Background()
	u := TestPG.Need(t)
	if _, err := Migrate(ctx, u); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		url     string
		opts    []Option
		maxConn int32
		timeout string
	}{
		{"defaults", u, nil, DefaultMaxConns, "5s"},
		{"options", u, []Option{WithMaxConns(3), WithStatementTimeout(1500 * time.Millisecond)}, 3, "1500ms"},
		{"url", u + "&pool_max_conns=7&statement_timeout=2500", nil, 7, "2500ms"},
		{"url options", u + "&options=-c%20statement_timeout%3D3500", nil, DefaultMaxConns, "3500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(ctx, tc.url, append([]Option{WithKEK(bytes.Repeat([]byte{1}, KEKSize))}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := s.pool.Config().MaxConns; got != tc.maxConn {
				t.Errorf("max conns: got %d, want %d", got, tc.maxConn)
			}
			var got string
			if err := s.pool.QueryRow(ctx, "SHOW statement_timeout").Scan(&got); err != nil || got != tc.timeout {
				t.Errorf("statement_timeout: got %q, %v; want %q", got, err, tc.timeout)
			}
		})
	}
	// A statement running past the timeout is cut and reported as unavailability.
	s, err := Open(ctx, u, WithKEK(bytes.Repeat([]byte{1}, KEKSize)), WithStatementTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.pool.Exec(ctx, "SELECT pg_sleep(2)")
	if err = classify(err); err == nil || !strings.Contains(err.Error(), "57014") {
		t.Fatalf("long statement: got %v, want a statement timeout (57014)", err)
	}
	// sslmode comes from the URL: the test server has no TLS, so require fails.
	_, err = Open(ctx, strings.Replace(u, "sslmode=disable", "sslmode=require", 1), WithKEK(bytes.Repeat([]byte{1}, KEKSize)))
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("sslmode=require against a server without TLS: got %v, want an SSL refusal", err)
	}
}
