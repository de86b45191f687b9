package cli

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// killableRegistry is go-containerregistry's registry on a fixed loopback
// address that dies (listener closed, every connection cut) on the first
// blob upload it sees while armed, and can be started again on the same
// address and storage.
type killableRegistry struct {
	t     *testing.T
	addr  string
	h     http.Handler
	mu    sync.Mutex
	srv   *httptest.Server
	armed bool
	kills int
}

func newKillableRegistry(t *testing.T) *killableRegistry {
	r := &killableRegistry{t: t, h: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	r.start()
	r.addr = strings.TrimPrefix(r.srv.URL, "http://")
	t.Cleanup(func() { r.mu.Lock(); defer r.mu.Unlock(); r.srv.Close() })
	return r
}

func (r *killableRegistry) start() {
	addr := "127.0.0.1:0"
	if r.addr != "" {
		addr = r.addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		kill := r.armed && strings.Contains(req.URL.Path, "/blobs/uploads") && (req.Method == http.MethodPatch || req.Method == http.MethodPut)
		if kill {
			r.armed = false
			r.kills++
		}
		srv := r.srv
		r.mu.Unlock()
		if kill { // mid-push: the upload's connection dies, then the whole server
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
				}
			}
			go func() { srv.CloseClientConnections(); srv.Close() }()
			return
		}
		r.h.ServeHTTP(w, req)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

func (r *killableRegistry) restart() {
	r.mu.Lock()
	old := r.srv
	r.mu.Unlock()
	old.Close()
	r.start()
}

// A push that dies with the registry leaves nothing in the broker that
// blocks the same command: the retry, once the registry is back, succeeds
// and the image pulls.
func TestEncryptKBSRetryAfterRegistryDiedMidPush(t *testing.T) {
	b := kbstest.New(t)
	b.AllowAll(t)
	b.AffirmSample(t)
	reg := newKillableRegistry(t)
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	src, dst := "oci:"+filepath.Join(dir, "app")+":v1", "docker://"+reg.addr+"/app:enc"
	args := []string{"encrypt", "--kbs", b.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app", src, dst}

	reg.armed = true
	_, err := runCoffer(t, "", args...)
	if err == nil || reg.kills != 1 {
		t.Fatalf("encrypt with the registry killed mid-push: err %v, kills %d", err, reg.kills)
	}
	t.Logf("registry killed mid-push: %v", err)
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, reg.addr) {
		t.Errorf("error is not one line naming the registry: %q", msg)
	}
	if _, gerr := b.Store.Get(context.Background(), protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "app"}); !errors.Is(gerr, spec.ErrNotFound) {
		t.Fatalf("after the failed push the broker holds a key at the key id (err %v): the retry would be refused", gerr)
	}

	reg.restart()
	if out, err := runCoffer(t, "", args...); err != nil {
		t.Fatalf("retry of the same command: %v\n%s", err, out)
	}
	if out, err := runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", dst, filepath.Join(dir, "rootfs")); err != nil {
		t.Fatalf("pull after the retry: %v\n%s", err, out)
	}
	// The key now exists: a third run is refused before anything is pushed.
	if _, err := runCoffer(t, "", args...); !errors.Is(err, spec.ErrExists) {
		t.Errorf("encrypt under a registered key id: %v, want ErrExists", err)
	}
}
