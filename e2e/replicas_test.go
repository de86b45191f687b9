package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
)

var pg pgtest.Shared

// replica is one `coffer kbs serve` process.
type replica struct {
	url string
	cmd *exec.Cmd
	log *bytes.Buffer
}

func startReplica(t *testing.T, args ...string) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{url: "http://" + addr, log: &bytes.Buffer{}}
	// The test binary acts as coffer when its first argument is argCLI (TestMain).
	r.cmd = exec.Command(self, append([]string{argCLI, "kbs", "serve", "--listen", addr}, args...)...)
	r.cmd.Stderr = r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.cmd.Process.Kill(); _ = r.cmd.Wait() })
	for start := time.Now(); ; {
		if resp, err := http.Get(r.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("replica %s did not become ready:\n%s", addr, r.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestThreeReplicas runs three `coffer kbs serve` processes on one
// PostgreSQL database: admin calls through one govern the others, guests
// spread over all three are served, and when one is killed with SIGKILL in
// the middle of the run every guest still gets its key with at most one
// retry per operation.
func TestThreeReplicas(t *testing.T) {
	dbURL := pg.Need(t)
	dir := t.TempDir()
	kek, tokenKey := filepath.Join(dir, "store.kek"), filepath.Join(dir, "token.pem")
	adminKey := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(kek, []byte(strings.Repeat("5a", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", tokenKey)
	mustCoffer(t, "kbs", "keygen-admin", "--out", adminKey)
	mustCoffer(t, "kbs", "migrate", "--store", dbURL)
	var rs []*replica
	for range 3 {
		rs = append(rs, startReplica(t, "--store", dbURL, "--store-kek", kek, "--token-key", tokenKey,
			"--admin-public-key", adminKey+".pub", "--allow-sample-tee", "--rate-limit", "0"))
	}
	secretFile := filepath.Join(dir, "key")
	if err := os.WriteFile(secretFile, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := func(i int) []string { return []string{"--url", rs[i].url, "--admin-key", adminKey} }
	mustCoffer(t, append([]string{"kbs", "set-resource", "--path", "default/image_key/app", "--resource-file", secretFile}, admin(0)...)...)
	mustCoffer(t, append([]string{"kbs", "set-resource-policy", "--allow-all"}, admin(1)...)...)
	if out := mustCoffer(t, append([]string{"kbs", "list-resources"}, admin(2)...)...); !strings.Contains(out, "default/image_key/app") {
		t.Fatalf("list-resources on replica 2: %q", out)
	}
	urls := []string{rs[0].url, rs[1].url, rs[2].url}
	// The policy and reference values set on replica 1 govern replicas 2 and 0
	// (the sample TEE is not affirming without them): each replica picks them
	// up within a second, before any guest starts.
	for _, r := range []int{2, 0} {
		for start := time.Now(); ; {
			out, _, err := coffer(t, "kbs", "get-resource", "--url", urls[r], "--tee", "sample", "--path", "default/image_key/app")
			if err == nil && out == "0123456789abcdef0123456789abcdef" {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("replica %d not following replica 1's policy after 1 s: %v", r, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	const guests = 8
	var stop atomic.Bool
	var served, maxRetries atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, guests)
	for g := range guests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			order := append(append([]string{}, urls[g%3:]...), urls[:g%3]...)
			for !stop.Load() {
				c, err := client.New(order[0], client.WithAttester(evidence.Sample{}), client.WithAlternateURLs(order[1:]...))
				if err != nil {
					errs <- err
					return
				}
				got, err := c.GetResource(context.Background(), "default", "image_key", "app")
				if err != nil || string(got) != "0123456789abcdef0123456789abcdef" {
					errs <- fmt.Errorf("guest %d: %q, %v", g, got, err)
					return
				}
				served.Add(1)
				for r := c.Retries(); r > maxRetries.Load(); {
					maxRetries.CompareAndSwap(maxRetries.Load(), r)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	before := served.Load()
	if err := rs[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	after := served.Load() - before
	if before == 0 || after == 0 {
		t.Fatalf("guests served %d before and %d after the kill: the run did not span it", before, after)
	}
	if maxRetries.Load() > 1 {
		t.Fatalf("a guest needed %d retries for one key, want at most 1", maxRetries.Load())
	}
	t.Logf("%d keys served before replica 0 was killed, %d after; at most %d retry per guest", before, after, maxRetries.Load())
}

// TestReplicasSurviveDatabaseRestart stops and starts PostgreSQL under two
// `coffer kbs serve` processes and a run of guests: during the outage the
// brokers answer 503 and are not ready; afterwards the same processes serve
// every guest again.
func TestReplicasSurviveDatabaseRestart(t *testing.T) {
	pg.Server(t) // skips when PostgreSQL is absent
	ctx := context.Background()
	db, err := pgtest.Start(ctx) // a server of its own: this test stops it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	dbURL, err := db.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kek, tokenKey, adminKey := filepath.Join(dir, "store.kek"), filepath.Join(dir, "token.pem"), filepath.Join(dir, "admin.key")
	if err := os.WriteFile(kek, []byte(strings.Repeat("5b", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", tokenKey)
	mustCoffer(t, "kbs", "keygen-admin", "--out", adminKey)
	mustCoffer(t, "kbs", "migrate", "--store", dbURL)
	var rs []*replica
	for range 2 {
		rs = append(rs, startReplica(t, "--store", dbURL, "--store-kek", kek, "--token-key", tokenKey,
			"--admin-public-key", adminKey+".pub", "--allow-sample-tee", "--rate-limit", "0"))
	}
	secretFile := filepath.Join(dir, "key")
	_ = os.WriteFile(secretFile, []byte("restart-survivor"), 0o600)
	mustCoffer(t, "kbs", "set-resource", "--path", "default/image_key/app", "--resource-file", secretFile, "--url", rs[0].url, "--admin-key", adminKey)
	mustCoffer(t, "kbs", "set-resource-policy", "--allow-all", "--url", rs[1].url, "--admin-key", adminKey)
	urls := []string{rs[0].url, rs[1].url}

	var stop atomic.Bool
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				c, _ := client.New(urls[g%2], client.WithAttester(evidence.Sample{}), client.WithAlternateURLs(urls[(g+1)%2]))
				if got, err := c.GetResource(ctx, "default", "image_key", "app"); err == nil && string(got) == "restart-survivor" {
					ok.Add(1)
				} else {
					failed.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := db.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(rs[0].url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with the database down: %v %v, want 503", resp, err)
	}
	resp.Body.Close()
	time.Sleep(300 * time.Millisecond)
	if err := db.Start(ctx); err != nil {
		t.Fatal(err)
	}
	before := ok.Load()
	for start := time.Now(); ok.Load() < before+8; {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("guests did not recover after the database restart (%d failures)", failed.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	for i, r := range rs {
		if r.cmd.ProcessState != nil {
			t.Fatalf("replica %d exited: %s", i, r.log)
		}
	}
	if failed.Load() == 0 {
		t.Fatal("no guest failed while the database was down: the outage did not overlap the run")
	}
	t.Logf("guests: %d served, %d failed during the outage; both broker processes kept running", ok.Load(), failed.Load())
}
