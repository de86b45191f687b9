package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
)

var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

// TestKBSPostgresWorkflow runs the operator's commands against a real
// PostgreSQL: serve refuses an unmigrated database, migrate is idempotent,
// list-resources shows paths not values, admin-token --allow-path scopes.
func TestKBSPostgresWorkflow(t *testing.T) {
	dbURL := pg.Need(t)
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek")
	if err := os.WriteFile(kek, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	keyFile := filepath.Join(dir, "admin.key")
	if _, err := runCoffer(t, "", "kbs", "keygen-admin", "--out", keyFile); err != nil {
		t.Fatal(err)
	}
	tokenKey := filepath.Join(dir, "token.pem")
	if err := os.WriteFile(tokenKey, tokenPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := []string{"kbs", "serve", "--store", dbURL, "--store-kek", kek, "--token-key", tokenKey, "--listen", addr, "--admin-public-key", keyFile + ".pub", "--allow-sample-tee"}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unmigrated", serve, "coffer kbs migrate"},
		{"no kek", []string{"kbs", "serve", "--store", dbURL, "--listen", addr}, "--store-kek"},
		{"no token key", []string{"kbs", "serve", "--store", dbURL, "--store-kek", kek, "--listen", addr}, "--token-key"},
		{"kek and state dir", append(append([]string{}, serve...), "--state-dir", dir), "state_dir"},
		{"migrate without url", []string{"kbs", "migrate"}, "--store"},
	} {
		if _, err := runCoffer(t, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	for _, want := range []string{"migrated from version 0 to 1", "already at version 1"} {
		out, err := runCoffer(t, "", "kbs", "migrate", "--store", dbURL)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("migrate: got %q, %v; want %q", out, err, want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := NewRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(serve)
		done <- root.ExecuteContext(ctx)
	}()
	url := "http://" + addr
	for i := 0; ; i++ {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 300 {
			t.Fatal("broker did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	admin := []string{"--url", url, "--admin-key", keyFile}
	value := filepath.Join(dir, "value")
	_ = os.WriteFile(value, []byte("THE-SECRET-VALUE"), 0o600)
	for _, p := range []string{"tenant-a/key/one", "tenant-b/key/one"} {
		if _, err := runCoffer(t, "", append([]string{"kbs", "set-resource", "--path", p, "--resource-file", value}, admin...)...); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runCoffer(t, "", append([]string{"kbs", "list-resources"}, admin...)...)
	if err != nil || !strings.Contains(out, "tenant-a/key/one") || !strings.Contains(out, "tenant-b/key/one") || !strings.Contains(out, "16") || strings.Contains(out, "THE-SECRET") {
		t.Fatalf("list-resources: %q, %v", out, err)
	}
	tok, err := runCoffer(t, "", "kbs", "admin-token", "--admin-key", keyFile, "--allow-path", "tenant-a/*/*", "--ttl", "1m")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"tenant-b/key/one": http.StatusForbidden, "tenant-a/key/two": http.StatusOK} {
		req, _ := http.NewRequest(http.MethodPost, url+protocol.PathResource+path, strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("scoped token writing %s: got %d, want %d", path, resp.StatusCode, want)
		}
		tok, _ = runCoffer(t, "", "kbs", "admin-token", "--admin-key", keyFile, "--allow-path", "tenant-a/*/*", "--ttl", "1m")
	}
	if _, err := runCoffer(t, "", "kbs", "admin-token", "--admin-key", keyFile, "--allow-path", "tenant-a/*"); err == nil {
		t.Error("admin-token accepted a two-segment pattern")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not shut down")
	}
	// Rotate to a new KEK: the old key alone then opens nothing.
	newKEK := filepath.Join(dir, "kek2")
	_ = os.WriteFile(newKEK, []byte(strings.Repeat("cd", 32)), 0o600)
	out, err = runCoffer(t, "", "kbs", "rotate-kek", "--store", dbURL, "--store-kek", newKEK, "--store-kek-previous", kek)
	if err != nil || !strings.Contains(out, "resealed 3 resources") {
		t.Fatalf("rotate-kek: %q, %v", out, err)
	}
	if _, err := runCoffer(t, "", "kbs", "rotate-kek", "--store", dbURL, "--store-kek", newKEK, "--store-kek-previous", filepath.Join(dir, "nope")); err == nil {
		t.Fatal("rotate-kek with a missing previous key file succeeded")
	}
}

func tokenPEM(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
