package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
	"github.com/coffer-dev/coffer/spec"
)

func guest(t *testing.T, urls []string) *client.Client {
	t.Helper()
	c, err := client.New(urls[0], client.WithAttester(evidence.Sample{}), client.WithAlternateURLs(urls[1:]...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func healthz(u string) (int, string) {
	resp, err := http.Get(u + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFaultDatabaseRestart stops PostgreSQL under a run of concurrent
// guests and admin writes: while it is down every call answers 503 with a
// detail naming the store and /healthz fails; after it is back the same
// broker processes serve again, and every acknowledged write is there.
func TestFaultDatabaseRestart(t *testing.T) {
	t.Parallel()
	pg.Server(t) // skip early when PostgreSQL is absent
	ctx := context.Background()
	db, err := pgtest.Start(ctx) // a server of its own: this test stops it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	u, err := db.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t, 2, u)
	f.ready()

	var stop atomic.Bool
	var wg sync.WaitGroup
	var okGuests, failedGuests atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				got, err := guest(t, f.urls).GetResource(ctx, "default", "image_key", "nginx")
				switch {
				case err == nil && bytes.Equal(got, secret):
					okGuests.Add(1)
				case err == nil:
					t.Errorf("guest got %q", got)
				default:
					failedGuests.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	type write struct {
		path, value string
		acked       bool
	}
	var writes []write
	var wmu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			w := write{path: fmt.Sprintf("default/w/%d", i), value: fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i%50))}
			err := f.admin(i%2).SetResource(ctx, w.path, []byte(w.value))
			w.acked = err == nil
			wmu.Lock()
			writes = append(writes, w)
			wmu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	time.Sleep(300 * time.Millisecond)
	if err := db.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	// While the database is down: 503 with a clear detail, readiness fails, liveness holds.
	c := newRCAR(t, f.urls[1])
	_, r := c.auth(protocol.TeeSample)
	wantError(t, r, http.StatusServiceUnavailable, protocol.ErrUnavailable, "store is unavailable")
	for i, u := range f.urls {
		if code, body := healthz(u); code != http.StatusServiceUnavailable || body != "not ready\n" {
			t.Errorf("replica %d /healthz with the database down: %d %q, want 503", i, code, body)
		}
		if resp, err := http.Get(u + "/healthz?probe=live"); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("replica %d liveness with the database down: %v %v, want 200", i, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := db.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("database down for %v", time.Since(down))
	up := time.Now()
	for i, u := range f.urls {
		for {
			if code, _ := healthz(u); code == http.StatusOK {
				break
			}
			if time.Since(up) > 15*time.Second {
				t.Fatalf("replica %d not ready 15 s after the database came back", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("replicas ready %v after the database came back", time.Since(up))
	// Guests recover on both replicas without a broker restart.
	before := okGuests.Load()
	for okGuests.Load() < before+8 {
		if time.Since(up) > 15*time.Second {
			t.Fatalf("guests did not recover: %d successes since the restart", okGuests.Load()-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range f.urls {
		if _, err := guest(t, f.urls[i:i+1]).GetResource(ctx, "default", "image_key", "nginx"); err != nil {
			t.Fatalf("guest on replica %d after recovery: %v", i, err)
		}
	}
	stop.Store(true)
	wg.Wait()

	// Every acknowledged write is there; a failed one is absent or whole.
	acked, failed := 0, 0
	for _, w := range writes {
		p, _ := protocol.ParseResourcePath(w.path)
		got, err := f.servers[0].Store().Get(ctx, p)
		switch {
		case w.acked:
			acked++
			if err != nil || string(got) != w.value {
				t.Errorf("acknowledged write %s: got %q, %v", w.path, got, err)
			}
		default:
			failed++
			if err != nil && !errors.Is(err, spec.ErrNotFound) {
				t.Errorf("read of failed write %s: %v", w.path, err)
			} else if err == nil && string(got) != w.value {
				t.Errorf("failed write %s half-applied: %q", w.path, got)
			}
		}
	}
	if acked == 0 || failed == 0 {
		t.Fatalf("%d acknowledged and %d failed writes: the outage did not overlap the writes", acked, failed)
	}
	t.Logf("guests: %d ok, %d failed attempts; writes: %d acknowledged (all readable), %d failed", okGuests.Load(), failedGuests.Load(), acked, failed)
}

// TestFaultReplicaKilledMidHandshake kills replica A (connections cut,
// listener closed) while concurrent guests are between /auth and /attest
// on it: each guest finishes on B with at most one retry.
func TestFaultReplicaKilledMidHandshake(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2, pg.Need(t))
	f.ready()
	// Put A behind a front that dies on its 4th /attest.
	var attests atomic.Int64
	var dead atomic.Bool
	killer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == protocol.PathAttest && attests.Add(1) == 4 {
			dead.Store(true)
		}
		if dead.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close() // no answer: as if the process died
				}
			}
			return
		}
		f.servers[0].ServeHTTP(w, r)
	}))
	t.Cleanup(killer.Close)
	urls := []string{killer.URL, f.urls[1]}

	ctx := context.Background()
	const guests = 12
	var wg sync.WaitGroup
	retries := make([]int64, guests)
	errs := make([]error, guests)
	start := make(chan struct{})
	for i := range guests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := guest(t, urls)
			<-start
			got, err := c.GetResource(ctx, "default", "image_key", "nginx")
			if err == nil && !bytes.Equal(got, secret) {
				err = fmt.Errorf("got %q", got)
			}
			errs[i], retries[i] = err, c.Retries()
		}()
	}
	close(start)
	wg.Wait()
	total := int64(0)
	for i := range guests {
		if errs[i] != nil {
			t.Errorf("guest %d: %v", i, errs[i])
		}
		if retries[i] > 1 {
			t.Errorf("guest %d needed %d retries, want at most 1", i, retries[i])
		}
		total += retries[i]
	}
	if !dead.Load() || total == 0 {
		t.Fatalf("replica A never died under the guests (attests %d, retries %d): the test did not test", attests.Load(), total)
	}
	t.Logf("%d guests, replica A killed at its 4th /attest: %d retries in total, every guest served", guests, total)
}
