package wls_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/spec"
)

// W18: a broker a stored flavor names answers 307 to an internal
// service; the WLS does not follow it (the internal service is never
// called) and the host never sees a broker's reply body.
func TestW18NoRedirectNoEcho(t *testing.T) {
	t.Parallel()
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		io.WriteString(w, `{"type":"x","detail":"INTERNAL-SECRET"}`)
	}))
	t.Cleanup(internal.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/admin/secrets", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirecting.Close)
	echoing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"UPSTREAM-SECRET"}`)
	}))
	t.Cleanup(echoing.Close)
	for _, broker := range []string{redirecting.URL, echoing.URL} {
		f := newFixture(t, t.TempDir())
		id, doc := f.flavor(t, broker)
		url := f.start(t)
		c := wlsclient.NewClient(url, f.admin, nil)
		if _, err := c.AddFlavor(t.Context(), doc); err != nil {
			t.Fatal(err)
		}
		if err := c.AddImage(t.Context(), imageID, id); err != nil {
			t.Fatal(err)
		}
		for _, req := range []func() (*http.Response, error){
			func() (*http.Response, error) { return http.Get(url + "/wls/images/" + imageID + "/flavor-key") },
			func() (*http.Response, error) {
				return http.Post(url+"/wls/images/"+imageID+"/flavor-key", "application/json", strings.NewReader(`{"session":"s"}`))
			},
		} {
			resp, err := req()
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("broker %s: HTTP %d %s", broker, resp.StatusCode, body)
			if strings.Contains(string(body), "SECRET") || resp.StatusCode/100 == 2 || !strings.Contains(string(body), broker) {
				t.Errorf("broker %s: HTTP %d %s; want a refusal naming the broker, without its reply", broker, resp.StatusCode, body)
			}
		}
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("the internal service was called %d times through the broker's redirect", n)
	}
}

func newServer(t testing.TB, f *fixture, log io.Writer) (*wls.Server, *wls.Store) {
	store, err := wls.OpenStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := wls.New(store, wls.WithFlavorSigners(f.cert), wls.WithAdminKeys(f.admin.Public().(ed25519.PublicKey)),
		wls.WithLogger(slog.New(slog.NewTextHandler(log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	return srv, store
}

// W12: flavors are create-only; a second upload of the same id (a new key
// URL) is refused with 409 and changes nothing; the explicit replace verb
// (PUT /wls/flavors/{id}, `coffer wls replace-flavor`) replaces it and is
// audited with the old and new key URL.
func TestW12CreateOnlyFlavors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, t.TempDir())
	var log bytes.Buffer
	srv, store := newServer(t, f, &log)
	defer store.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := wlsclient.NewClient(hs.URL, f.admin, nil)
	fl, _ := flavor.New(flavor.PartImage, "vm", flavor.KeyURL("https://kbs-a.example", "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	doc1, _ := flavor.Sign(fl, f.key)
	fl.Encryption.KeyURL = flavor.KeyURL("https://kbs-b.example", "3b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c")
	doc2, _ := flavor.Sign(fl, f.key)
	if _, err := c.AddFlavor(ctx, doc1); err != nil {
		t.Fatal(err)
	}
	_, err := c.AddFlavor(ctx, doc2)
	if !errors.Is(err, spec.ErrExists) {
		t.Fatalf("second upload of flavor %s: err = %v, want ErrExists (409)", fl.Meta.ID, err)
	}
	get := func() string {
		resp, err := http.Get(hs.URL + "/wls/flavors/" + fl.Meta.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); !strings.Contains(got, "kbs-a.example") {
		t.Errorf("after the refused upload the stored flavor is %s", got)
	}
	if err := c.ReplaceFlavor(ctx, fl.Meta.ID, doc2); err != nil {
		t.Fatal(err)
	}
	if got := get(); !strings.Contains(got, "kbs-b.example") {
		t.Errorf("after replace the stored flavor is %s", got)
	}
	if a := log.String(); !strings.Contains(a, `op="replace flavor"`) || !strings.Contains(a, "old_key_url=https://kbs-a.example") {
		t.Errorf("replace not audited with the old key URL:\n%s", a)
	}
	// the replace verb cannot create, nor move a document to another id
	if err := c.ReplaceFlavor(ctx, "00000000-0000-4000-8000-000000000009", doc2); err == nil {
		t.Error("replace under another id accepted")
	}
}

// The WLS keeps and serves the verified document: an upload with a second
// top-level "flavor" member (a forged one first, the signed one last, which
// is what encoding/json verifies) is stored as the signed member alone.
func TestStoresVerifiedBytes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newFixture(t, t.TempDir())
	url := f.start(t)
	c := wlsclient.NewClient(url, f.admin, nil)
	id, doc := f.flavor(t, "https://kbs.example")
	var sd flavor.Signed
	json.Unmarshal(doc, &sd)
	forged := strings.Replace(string(sd.Flavor), `"vm"`, `"FORGED"`, 1)
	forged = strings.Replace(forged, "https://kbs.example", "https://evil.example", 1)
	dup := `{"flavor":` + forged + `,"flavor":` + string(sd.Flavor) + `,"signature":"` + sd.Signature + `","x":"junk"}`
	if got, err := c.AddFlavor(ctx, []byte(dup)); err != nil || got != id {
		t.Fatalf("AddFlavor(dup) = %q, %v", got, err)
	}
	for _, read := range []func() []byte{
		func() []byte {
			resp, err := http.Get(url + "/wls/flavors/" + id)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return b
		},
		func() []byte { b, _ := os.ReadFile(filepath.Join(f.dir, "flavors", id+".json")); return b },
	} {
		b := read()
		if bytes.Contains(b, []byte("FORGED")) || bytes.Contains(b, []byte("evil.example")) || bytes.Count(b, []byte(`"flavor"`)) != 1 || bytes.Contains(b, []byte("junk")) {
			t.Errorf("kept/served %s; want the verified member alone", b)
		}
		if _, err := flavor.Verify(b, []*x509.Certificate{f.cert}); err != nil {
			t.Errorf("kept document does not verify: %v", err)
		}
	}
}

// W3 (WLS): a single-use admin token spent before a restart stays spent
// after it (the ids live in the store until the token expires).
func TestW3AdminTokenSpentAcrossRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, t.TempDir())
	tok := token.SignAdmin(f.admin, "", time.Now(), token.AdminClientTTL)
	post := func(url string, doc []byte) int {
		req, _ := http.NewRequest(http.MethodPost, url+wls.PathFlavors, bytes.NewReader(doc))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	_, doc1 := f.flavor(t, "https://kbs.example")
	srv1, store1 := newServer(t, f, io.Discard)
	hs1 := httptest.NewServer(srv1)
	if got := post(hs1.URL, doc1); got != 201 {
		t.Fatalf("first use: HTTP %d", got)
	}
	hs1.Close()
	store1.Close()
	srv2, store2 := newServer(t, f, io.Discard) // "restart" on the same directory
	defer store2.Close()
	hs2 := httptest.NewServer(srv2)
	defer hs2.Close()
	_, doc2 := f.flavor(t, "https://kbs.example")
	if got := post(hs2.URL, doc2); got != 401 {
		t.Errorf("the spent token after a restart: HTTP %d, want 401", got)
	}
}

// W21: a refused key-by-URL request costs a map lookup, not a pass over
// the stored flavors. 1,000 stored flavors; every request names a broker
// none of them does.
func BenchmarkW21RefusedKeyByURL(b *testing.B) {
	f := newFixture(b, b.TempDir())
	store, err := wls.OpenStore(f.dir)
	if err != nil {
		b.Fatal(err)
	}
	store.Close()
	for i := range 1000 { // written straight into the store: New verifies and indexes them
		fl, _ := flavor.New(flavor.PartImage, fmt.Sprintf("vm%d", i), flavor.KeyURL(fmt.Sprintf("https://kbs%d.example", i), "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
		doc, _ := flavor.Sign(fl, f.key)
		if err := os.WriteFile(filepath.Join(f.dir, "flavors", fl.Meta.ID+".json"), doc, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	srv, store := newServer(b, f, io.Discard)
	defer store.Close()
	if ids, _ := store.FlavorIDs(); len(ids) != 1000 {
		b.Fatalf("%d flavors stored", len(ids))
	}
	body := []byte(`{"key_url":"` + flavor.KeyURL("https://not-a-stored-broker.example", "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c") + `"}`)
	b.ResetTimer()
	for range b.N {
		req := httptest.NewRequest(http.MethodPost, wls.PathKeyChallenge, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			b.Fatalf("HTTP %d, want 403", rec.Code)
		}
	}
}

// W20 at the WLS: each caller holds at most its cap of unanswered
// challenges; when all callers together hold the per-broker cap, the
// oldest challenge of the caller holding most is spent at the broker (an
// empty attestation with its cookie) to make room for another caller.
func TestW20PendingCaps(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sessions, spent []string
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/kbs/v0/auth":
			id := fmt.Sprintf("s%02d", len(sessions))
			sessions = append(sessions, id)
			http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: id})
			io.WriteString(w, `{"nonce":"bm9uY2U=","extra-params":""}`)
		case "/kbs/v0/attest":
			c, _ := r.Cookie("kbs-session-id")
			spent = append(spent, c.Value)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(broker.Close)
	f := newFixture(t, t.TempDir())
	store, err := wls.OpenStore(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv, err := wls.New(store, wls.WithFlavorSigners(f.cert), wls.WithAdminKeys(f.admin.Public().(ed25519.PublicKey)),
		wls.WithMaxPendingPerCaller(3), wls.WithMaxPendingPerBroker(4), wls.WithBrokerRate(0, 0),
		wls.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := wlsclient.NewClient(hs.URL, f.admin, nil)
	id, doc := f.flavor(t, broker.URL)
	if _, err := c.AddFlavor(t.Context(), doc); err != nil {
		t.Fatal(err)
	}
	if err := c.AddImage(t.Context(), imageID, id); err != nil {
		t.Fatal(err)
	}
	from := func(last byte) int {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}}
		hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		resp, err := hc.Get(hs.URL + "/wls/images/" + imageID + "/flavor-key")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var codes []int
	for _, caller := range []byte{2, 2, 2, 2, 3, 4} { // A×4 (the 4th over its cap), B, C (the broker cap is full)
		codes = append(codes, from(caller))
	}
	if want := []int{200, 200, 200, 429, 200, 200}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("codes %v, want %v", codes, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := fmt.Sprint(spent)
		mu.Unlock()
		if got == "[s00]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spent at the broker: %s, want [s00] (caller A's oldest)", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A now holds 2: it may open one more
	if got := from(2); got != 200 {
		t.Errorf("caller A after its oldest was spent: HTTP %d, want 200", got)
	}
}
