package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store"
)

// downStore is a memory store whose database "is down" while down is set:
// its errors name the address, user and database, as PostgreSQL's do.
type downStore struct {
	store.Store
	down atomic.Bool
}

func (d *downStore) Ping(context.Context) error {
	if d.down.Load() {
		return errors.New(`failed to connect to user=kbs_owner database=kbs_prod: 10.1.2.3:5432 (db.internal): dial error`)
	}
	return nil
}

// The unauthenticated /healthz says ok or not ready, nothing else; the
// cause is in the log.
func TestHealthzSaysOnlyReadyOrNot(t *testing.T) {
	st := &downStore{Store: store.NewMemory()}
	var log strings.Builder
	srv, err := server.New(context.Background(), server.WithStore(st), server.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	get := func() (int, string) {
		resp, err := http.Get(hs.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("ready: %d %q", code, body)
	}
	st.down.Store(true)
	if code, body := get(); code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Errorf("store down: %d %q, want 503 \"not ready\\n\"", code, body)
	}
	if !strings.Contains(log.String(), "10.1.2.3:5432") {
		t.Errorf("the cause is not in the log:\n%s", log.String())
	}
}
