package api

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/kbs/kbstest"
)

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

// TestUnixSocket: the API served on a unix socket is mode 0600, answers
// whatever the Host (it has none that means anything), still refuses
// cross-origin requests, and its socket is removed on close.
func TestUnixSocket(t *testing.T) {
	b := kbstest.New(t)
	b.SetResource(t, "default/image_key/app", []byte("secret-kek"))
	b.AllowAll(t)
	c, err := client.New(b.URL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	ln, err := Listen("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	if a := ln.Addr(); a.Network() != "unix" || a.String() != path {
		t.Errorf("Addr() = %s %s, want unix %s", a.Network(), a, path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("created directory: %v, %v; want 0700", di.Mode(), err)
	}
	srv := &http.Server{Handler: newHandler(t, c, evidence.Sample{})}
	go srv.Serve(ln)
	hc := unixClient(path)
	for _, host := range []string{"localhost", "coffer-agent", "attacker.example"} {
		resp, body := getWith(t, hc, "http://x"+endpoints[0], host)
		if resp.StatusCode != http.StatusOK || body != "secret-kek" {
			t.Errorf("unix socket, Host %s: %d %q, want 200 secret-kek", host, resp.StatusCode, body)
		}
	}
	if resp, body := getWith(t, hc, "http://localhost"+endpoints[0], "", "Origin", "http://attacker.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("unix socket, foreign Origin: %d %q, want 403", resp.StatusCode, body)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket after shutdown: %v, want removed", err)
	}
}

func TestListenUnixStaleAndForeignFiles(t *testing.T) {
	dir := t.TempDir()

	// A socket left by a dead agent is replaced.
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := Listen("unix:" + stale)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}

	// A live one is not.
	if _, err := Listen("unix:" + stale); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen on a live socket: %v, want an error", err)
	}
	ln.Close()

	// Nor is a file that is not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen("unix:" + file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: %v, want an error", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("regular file after refused Listen: %q, %v", b, err)
	}

	// Close removes only the socket Listen created.
	replaced := filepath.Join(dir, "replaced.sock")
	ln, err = Listen("unix:" + replaced)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(replaced)
	os.WriteFile(replaced, []byte("new"), 0o600)
	ln.Close()
	if _, err := os.Stat(replaced); err != nil {
		t.Errorf("Close removed a file it did not create: %v", err)
	}

	if _, err := Listen("unix:"); err == nil {
		t.Error(`Listen("unix:") succeeded`)
	}
}
