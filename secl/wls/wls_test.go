package wls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/spec"
)

type fixture struct {
	key   *ecdsa.PrivateKey
	cert  *x509.Certificate
	admin ed25519.PrivateKey
	dir   string
}

func newFixture(t testing.TB, dir string) *fixture {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "owner"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	_, admin, _ := ed25519.GenerateKey(rand.Reader)
	return &fixture{key: key, cert: cert, admin: admin, dir: dir}
}

func (f *fixture) start(t testing.TB) string {
	store, err := wls.OpenStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := wls.New(store, wls.WithFlavorSigners(f.cert), wls.WithAdminKeys(f.admin.Public().(ed25519.PublicKey)),
		wls.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	if tt, ok := t.(*testing.T); ok {
		tt.Cleanup(func() { hs.Close(); store.Close() })
	}
	return hs.URL
}

func (f *fixture) flavor(t testing.TB, brokerURL string) (string, []byte) {
	fl, err := flavor.New(flavor.PartImage, "vm", flavor.KeyURL(brokerURL, "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := flavor.Sign(fl, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return fl.Meta.ID, doc
}

const imageID = "6f1e2d3c-4b5a-4968-8776-655443322110"

// Flavors and images survive a restart; unknown flavors cannot be
// associated; an image whose broker is down answers a clear error.
func TestStoreAndErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, t.TempDir())
	// a broker address nobody listens on
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	id, doc := f.flavor(t, dead)
	c := wlsclient.NewClient(f.start(t), f.admin, nil)
	if got, err := c.AddFlavor(ctx, doc); err != nil || got != id {
		t.Fatalf("AddFlavor = %q, %v", got, err)
	}
	if err := c.AddImage(ctx, imageID, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("image with an unknown flavor: err = %v, want ErrNotFound", err)
	}
	if err := c.AddImage(ctx, imageID, id); err != nil {
		t.Fatal(err)
	}
	url2 := f.start(t) // a second service on the same directory
	c2 := wlsclient.NewClient(url2, f.admin, nil)
	resp, err := http.Get(url2 + "/wls/flavors/" + id)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stored flavor after restart: %v %v", resp, err)
	}
	_, err = c2.Challenge(ctx, imageID)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("broker down: err = %v, want one saying the broker is unreachable", err)
	}
	if _, err := c2.Challenge(ctx, "00000000-0000-4000-8000-000000000001"); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("unknown image: err = %v, want ErrNotFound", err)
	}
}

// Admin calls: a token buys one write; foreign keys and no token are refused.
func TestAdminAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir())
	url := f.start(t)
	_, doc := f.flavor(t, "http://127.0.0.1:1")
	post := func(tok string) int {
		req, _ := http.NewRequest(http.MethodPost, url+wls.PathFlavors, strings.NewReader(string(doc)))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	tok := token.SignAdmin(f.admin, "", time.Now(), token.AdminClientTTL)
	for _, tc := range []struct {
		name string
		tok  string
		want int
	}{
		{"no token", "", 401},
		{"foreign key", token.SignAdmin(other, "", time.Now(), token.AdminClientTTL), 401},
		{"good token", tok, 201},
		{"same token again (jti replay)", tok, 401},
	} {
		if got := post(tc.tok); got != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A workload service stores only flavors its configured signer signed.
func Example() {
	dir, _ := os.MkdirTemp("", "wls-example")
	defer os.RemoveAll(dir)
	f := newFixture(nil, dir)
	store, _ := wls.OpenStore(f.dir)
	srv, _ := wls.New(store, wls.WithFlavorSigners(f.cert), wls.WithAdminKeys(f.admin.Public().(ed25519.PublicKey)),
		wls.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := wlsclient.NewClient(hs.URL, f.admin, nil)

	id, doc := f.flavor(nil, "https://kbs.example")
	got, err := c.AddFlavor(context.Background(), doc)
	fmt.Println(got == id, err)
	_, err = c.AddFlavor(context.Background(), []byte(strings.Replace(string(doc), `"vm"`, `"vx"`, 1)))
	fmt.Println(err != nil)
	// Output:
	// true <nil>
	// true
}

// A host cannot make the service call a broker no flavor names and the
// operator did not allow (the service is not an open relay).
func TestKeyURLAllowlist(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, t.TempDir())
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	known := "http://" + l.Addr().String()
	l.Close()
	_, doc := f.flavor(t, known)
	c := wlsclient.NewClient(f.start(t), f.admin, nil)
	if _, err := c.AddFlavor(ctx, doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, keyURL string
		wantDenied   bool
	}{
		{"broker of a stored flavor", flavor.KeyURL(known, "00000000-0000-4000-8000-000000000002"), false},
		{"another broker", flavor.KeyURL("http://169.254.169.254", "00000000-0000-4000-8000-000000000002"), true},
	} {
		_, err := c.KeyChallenge(ctx, tc.keyURL)
		if denied := errors.Is(err, spec.ErrPolicyDenied); denied != tc.wantDenied {
			t.Errorf("%s: err = %v, denied %v, want %v", tc.name, err, denied, tc.wantDenied)
		}
	}
}

// The host endpoints are limited per client address (each call opens a
// broker session that the broker counts against the service).
func TestHostRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir())
	store, err := wls.OpenStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv, err := wls.New(store, wls.WithFlavorSigners(f.cert), wls.WithRateLimit(1, 2), wls.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	var codes []int
	for range 3 {
		resp, err := http.Get(hs.URL + "/wls/images/" + imageID + "/flavor-key")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if want := []int{404, 404, 429}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("status codes %v, want %v", codes, want)
	}
}

// Flavors are create-only: a second upload of an id is refused, and
// ReplaceFlavor (coffer wls replace-flavor) is the explicit, audited way.
func ExampleClient_ReplaceFlavor() {
	dir, _ := os.MkdirTemp("", "wls-example")
	defer os.RemoveAll(dir)
	f := newFixture(nil, dir)
	store, _ := wls.OpenStore(f.dir)
	defer store.Close()
	srv, _ := wls.New(store, wls.WithFlavorSigners(f.cert), wls.WithAdminKeys(f.admin.Public().(ed25519.PublicKey)),
		wls.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := wlsclient.NewClient(hs.URL, f.admin, nil)
	ctx := context.Background()

	fl, _ := flavor.New(flavor.PartImage, "vm", flavor.KeyURL("https://kbs.example", "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	v1, _ := flavor.Sign(fl, f.key)
	fl.Meta.Description.Label = "vm, release 2"
	v2, _ := flavor.Sign(fl, f.key)
	_, err := c.AddFlavor(ctx, v1)
	fmt.Println(err)
	_, err = c.AddFlavor(ctx, v2)
	fmt.Println(errors.Is(err, spec.ErrExists))
	fmt.Println(c.ReplaceFlavor(ctx, fl.Meta.ID, v2))
	// Output:
	// <nil>
	// true
	// <nil>
}
