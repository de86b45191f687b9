package server_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
)

// Attack W3 (review 3), broker side: a single-use admin token (jti) was
// remembered only in the broker's memory, so after a restart over the
// fs store the same token wrote again, for the rest of its 2 h lifetime.
// The fs store now keeps spent ids until the token expires.
func TestAttackAdminTokenReplayAfterRestart(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	// start is one `kbs serve` over the fs store in dir: nothing but the
	// directory survives from one start to the next.
	start := func() (string, func()) {
		fs, err := store.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		s, err := server.New(t.Context(), server.WithStore(fs), server.WithAdminKeys(pub),
			server.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s)
		return hs.URL, func() { hs.Close(); s.Close(); fs.Close() }
	}
	put := func(base, tok, value string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+protocol.PathResource+"default/image_key/app", strings.NewReader(value))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tok := token.SignAdmin(priv, "", time.Now(), 10*time.Minute)
	base, stop := start()
	if code, body := put(base, tok, "the-owner-key-the-owner-key-0032"); code != http.StatusOK {
		t.Fatalf("first write: %d %s", code, body)
	}
	stop()
	base, stop = start()
	defer stop()
	code, body := put(base, tok, "attacker-key-attacker-key-000032")
	if code != http.StatusUnauthorized || !strings.Contains(body, "jti replay") {
		t.Fatalf("replay after restart: %d %s, want 401 naming the jti replay", code, body)
	}
	fs, _ := store.NewFS(dir)
	defer fs.Close()
	got, err := fs.Get(t.Context(), protocol.ResourcePath{Repo: "default", Type: "image_key", Tag: "app"})
	if err != nil || !bytes.Equal(got, []byte("the-owner-key-the-owner-key-0032")) {
		t.Fatalf("resource after the replay: %q %v", got, err)
	}
	// A fresh token still writes: the refusal is the replay, not the restart.
	if code, body := put(base, token.SignAdmin(priv, "", time.Now(), 10*time.Minute), "the-owner-key-the-owner-key-0032"); code != http.StatusOK {
		t.Fatalf("fresh token after restart: %d %s", code, body)
	}
}
