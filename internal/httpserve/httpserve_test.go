package httpserve

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeAnswersAndStopsWithContext(t *testing.T) {
	c := Config{Name: "test", Addr: "127.0.0.1:0", ShutdownTimeout: time.Second}
	ln, err := Listen(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") }), c)
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hi" {
		t.Fatalf("body %q, want hi", b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
		t.Fatal("still answering after shutdown")
	}
}

func TestListenErrorsNameTheDaemon(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.pem")
	_, err := Listen(Config{Name: "wls", Addr: "127.0.0.1:0", TLSCert: missing, TLSKey: missing})
	if err == nil || !strings.HasPrefix(err.Error(), "wls tls:") {
		t.Fatalf("missing certificate: %v, want a \"wls tls:\" error", err)
	}
	_, err = Listen(Config{Name: "kbs", Addr: "256.0.0.1:1"})
	if err == nil || !strings.HasPrefix(err.Error(), "kbs listen:") {
		t.Fatalf("bad address: %v, want a \"kbs listen:\" error", err)
	}
}
