package pull

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// flipWriter flips one byte of what the registry writes.
type flipWriter struct {
	http.ResponseWriter
	at, n int
}

func (w *flipWriter) Write(p []byte) (int, error) {
	if i := w.at - w.n; i >= 0 && i < len(p) {
		q := append([]byte(nil), p...)
		q[i] ^= 0x40
		p = q
	}
	w.n += len(p)
	return w.ResponseWriter.Write(p)
}

// TestPullRegistryCiphertextAuthenticatedByHMAC: pull reads a registry's
// encrypted blobs without go-containerregistry's digest pass (the HMAC is
// the one SHA-256-class pass over them). A registry that serves one changed
// byte is caught by the HMAC, before anything is unpacked.
func TestPullRegistryCiphertextAuthenticatedByHMAC(t *testing.T) {
	ref, key, img := fixture(t)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	target := "/blobs/" + m.Layers[1].Digest.String()
	var tamper atomic.Bool
	var gets atomic.Int32
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, target) {
			gets.Add(1)
			if tamper.Load() {
				w = &flipWriter{ResponseWriter: w, at: 7}
			}
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	// Copy the fixture into the wrapped registry.
	dst, err := transport.Parse("docker://" + strings.TrimPrefix(srv.URL, "http://") + "/app:enc")
	if err != nil {
		t.Fatal(err)
	}
	a, closeSrc, err := transport.Read(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	if err := transport.Write(context.Background(), dst, a); err != nil {
		t.Fatal(err)
	}

	gets.Store(0)
	dir := t.TempDir()
	if err := Pull(context.Background(), dst, filepath.Join(dir, "rootfs"), WithKeys(key)); err != nil {
		t.Fatalf("untampered pull: %v", err)
	}
	if got := gets.Load(); got != 1 {
		t.Errorf("the layer blob was fetched %d times, want 1", got)
	}

	tamper.Store(true)
	dir = t.TempDir()
	err = Pull(context.Background(), dst, filepath.Join(dir, "rootfs"), WithKeys(key))
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "HMAC") {
		t.Fatalf("tampered blob: err = %v, want the HMAC mismatch (ErrIntegrity)", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("tampered blob left %d entries next to the rootfs", len(left))
	}
}
